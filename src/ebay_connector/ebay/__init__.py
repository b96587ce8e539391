"""ebay"""
