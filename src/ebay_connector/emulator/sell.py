"""A few of eBay's Sell APIs, per seller, in eBay's shapes: enough for programs to work through.

    GET  /sell/inventory/v1/inventory_item?limit&offset   getInventoryItems
    GET  /sell/inventory/v1/inventory_item/{sku}          getInventoryItem
    PUT  /sell/inventory/v1/inventory_item/{sku}          createOrReplaceInventoryItem (204)
    GET  /sell/fulfillment/v1/order?limit&offset          getOrders
    GET  /sell/account/v1/privilege                       getPrivileges

Every call needs a live *user* access token (401 errorId 1001 otherwise, eBay's envelope) with
one of the API's scopes (403 errorId 1100); an application token gets 403 too. Called only by
:class:`~ebay_connector.emulator.state.Emulator`, under its lock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from ebay_connector.emulator import wire
from ebay_connector.emulator.store import Access, SellerData
from ebay_connector.emulator.wire import Answer

ROOT: Final = "https://api.ebay.com/oauth/api_scope/"
INVENTORY_READ: Final = frozenset({ROOT + "sell.inventory", ROOT + "sell.inventory.readonly"})
INVENTORY_WRITE: Final = frozenset({ROOT + "sell.inventory"})
FULFILLMENT_READ: Final = frozenset({ROOT + "sell.fulfillment", ROOT + "sell.fulfillment.readonly"})
ACCOUNT_READ: Final = frozenset({ROOT + "sell.account", ROOT + "sell.account.readonly"})
INVENTORY_PATH: Final = "/sell/inventory/v1/inventory_item"
ORDER_PATH: Final = "/sell/fulfillment/v1/order"
PRIVILEGE_PATH: Final = "/sell/account/v1/privilege"
MAX_LIMIT = 200
DEFAULT_LIMIT = 25


def _error(status: int, error_id: int, domain: str, message: str, **extra: Any) -> Answer:
    return Answer(
        status,
        {
            "errors": [
                {
                    "errorId": error_id,
                    "domain": domain,
                    "category": "REQUEST",
                    "message": message,
                    **extra,
                }
            ]
        },
    )


# Our choice where eBay's exact wording was not observed; the ids are eBay's documented ones.
NOT_FOUND = _error(
    404, 25710, "API_INVENTORY", "We didn't find the entity you are requesting. Please verify"
)
INVALID_BODY = _error(400, 2004, "ACCESS", "Invalid request")
CONTENT_LANGUAGE = _error(400, 25709, "API_INVENTORY", "Invalid value for header Content-Language.")
BAD_LIMIT = _error(400, 2004, "ACCESS", "Invalid request: limit and offset must be numbers")


def authorize(access: Access | None, scopes: frozenset[str]) -> Answer | None:
    if access is None:
        return Answer(401, wire.INVALID_ACCESS_TOKEN)
    if access.username is None or not access.scopes & scopes:
        return Answer(403, wire.ACCESS_DENIED)
    return None


def _page(query: Mapping[str, str]) -> tuple[int, int] | None:
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
        offset = int(query.get("offset", 0))
    except ValueError:
        return None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        return None
    return limit, offset


def inventory_items(data: SellerData, query: Mapping[str, str]) -> Answer:
    page = _page(query)
    if page is None:
        return BAD_LIMIT
    limit, offset = page
    skus = sorted(data.inventory)
    items = [{"sku": sku, **data.inventory[sku]} for sku in skus[offset : offset + limit]]
    return Answer(
        200,
        {
            "href": f"{INVENTORY_PATH}?limit={limit}&offset={offset}",
            "total": len(skus),
            "size": len(items),
            "limit": limit,
            "offset": offset,
            "inventoryItems": items,
        },
    )


def inventory_item(data: SellerData, sku: str) -> Answer:
    item = data.inventory.get(sku)
    return NOT_FOUND if item is None else Answer(200, {"sku": sku, **item})


def put_inventory_item(
    data: SellerData, sku: str, body: bytes, content_language: str | None
) -> Answer:
    if not content_language:
        return CONTENT_LANGUAGE
    try:
        item = json.loads(body)
    except ValueError:
        return INVALID_BODY
    if not isinstance(item, dict) or not sku or len(sku) > 50:
        return INVALID_BODY
    item.pop("sku", None)
    data.inventory[sku] = {**item, "locale": content_language.replace("-", "_")}
    return Answer(204, None)


def orders(data: SellerData, query: Mapping[str, str]) -> Answer:
    page = _page(query)
    if page is None:
        return BAD_LIMIT
    limit, offset = page
    chosen = data.orders[offset : offset + limit]
    return Answer(
        200,
        {
            "href": f"{ORDER_PATH}?limit={limit}&offset={offset}",
            "total": len(data.orders),
            "limit": limit,
            "offset": offset,
            "orders": chosen,
            "warnings": [],
        },
    )


def privileges() -> Answer:
    return Answer(
        200,
        {
            "sellerRegistrationCompleted": True,
            "sellingLimit": {"amount": {"currency": "USD", "value": "25000.0"}, "quantity": 500},
        },
    )
