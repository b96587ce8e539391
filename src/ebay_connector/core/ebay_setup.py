"""The application's setup at eBay, as ``ebay-connector doctor`` sees it (no I/O): does eBay
accept the keyset, does the authorize URL open the consent page, is the RuName the keyset's and
does it lead back here, do the callback and the account-deletion endpoint answer as eBay and
sellers' browsers will reach them. The verdicts are :class:`~ebay_connector.core.checkup.Check`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from ebay_connector.core.checkup import Check, Finding, Status, combine, is_local_host
from ebay_connector.core.outcome import MEANINGS, Outcome

# eBay: the application's credentials, the consent page, the RuName -------------------------------


def credentials_check(outcome: Outcome, message: str, environment: str) -> Check:
    """The client-credentials grant's outcome: does eBay accept the keyset?"""
    if outcome is Outcome.OK:
        return Check("credentials", Status.OK, "eBay granted an application token")
    if outcome is Outcome.INVALID_CLIENT:
        return Check(
            "credentials",
            Status.FAIL,
            f"invalid_client: eBay refused the App ID / Cert ID ({message})",
            f"set EBAY_CONNECTOR_CLIENT_ID and EBAY_CONNECTOR_CLIENT_SECRET to the {environment} "
            "keyset's App ID and Cert ID (developer portal, Application Keys).",
        )
    if outcome is Outcome.INVALID_SCOPE:
        return Check(
            "credentials",
            Status.FAIL,
            f"invalid_scope: {message}",
            "the keyset is not allowed the basic api_scope: check the keyset in the developer "
            "portal.",
        )
    if outcome in (Outcome.TRANSIENT, Outcome.RATE_LIMITED):
        return Check(
            "credentials",
            Status.FAIL,
            f"eBay's token endpoint did not answer usefully: {message}",
            "check that this host reaches eBay (proxy, firewall, DNS), then run doctor again.",
        )
    return Check(
        "credentials", Status.FAIL, f"{outcome.value}: {message}", MEANINGS.get(outcome, "")
    )


@dataclass(frozen=True)
class PageAnswer:
    """What an HTTP GET answered (redirects are not followed), or why nothing did."""

    status: int | None
    location: str | None = None
    content_type: str = ""
    body: bytes = b""
    date: str | None = None  # the Date header
    error: str | None = None  # the transport failure when there is no answer


def _page_error_id(answer: PageAnswer) -> str | None:
    """eBay's authorize page says ``error_id`` (JSON) or redirects to ``errorOauth?errorId=``."""
    if answer.location and "error" in answer.location.lower():
        query = dict(
            part.split("=", 1) for part in urlsplit(answer.location).query.split("&") if "=" in part
        )
        return query.get("errorId") or query.get("error") or "an error page"
    try:
        parsed = json.loads(answer.body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(parsed, dict):
        error = parsed.get("error_id") or parsed.get("error")
        return str(error) if error else None
    return None


def consent_check(answer: PageAnswer, ru_name: str) -> Check:
    """Does the authorize URL open eBay's consent (or sign-in) page, not its error page?"""
    remedy_ru = (
        f"check that EBAY_CONNECTOR_RU_NAME ({ru_name}) is the RuName of this keyset and "
        "EBAY_CONNECTOR_SCOPES only scopes the keyset has (developer portal, User Tokens)."
    )
    if answer.status is None:
        return Check(
            "consent",
            Status.FAIL,
            f"eBay's authorize page did not answer: {answer.error}",
            "check that this host reaches eBay.",
        )
    error_id = _page_error_id(answer)
    if error_id is not None:
        return Check(
            "consent",
            Status.FAIL,
            f"the authorize URL opens eBay's error page ({error_id}, HTTP {answer.status})",
            remedy_ru,
        )
    if answer.status in (301, 302, 303, 307, 308) and answer.location:
        # Without a session eBay sends the seller to sign in first, then to the consent page.
        host = urlsplit(answer.location).hostname or ""
        if host == "ebay.com" or host.endswith(".ebay.com"):
            return Check(
                "consent", Status.OK, f"the authorize URL leads to eBay's sign-in ({host})"
            )
        return Check(
            "consent",
            Status.FAIL,
            f"the authorize URL redirects away from eBay ({host})",
            "check EBAY_CONNECTOR_EBAY_ENVIRONMENT (and any proxy in between).",
        )
    if answer.status == 200 and "html" in answer.content_type:
        return Check("consent", Status.OK, "the authorize URL opens eBay's consent page")
    return Check(
        "consent",
        Status.FAIL,
        f"the authorize URL answered HTTP {answer.status} ({answer.content_type or 'no type'})",
        remedy_ru,
    )


@dataclass(frozen=True)
class RegisteredApp:
    """The keyset as eBay holds it (the emulator publishes its registry; eBay does not)."""

    ru_name: str
    accept_url: str


def registry_unreachable(url: str, error: str) -> Check:
    """The emulator's registry (where ``ru_name`` reads the keyset) did not answer."""
    return Check(
        "ru_name",
        Status.FAIL,
        f"the emulator's app registry did not answer at {url}: {error}",
        "start the emulator (`ebay-connector serve` in emulator mode, or "
        "`ebay-connector emulator`) or correct EBAY_CONNECTOR_EMULATOR_URL.",
    )


def app_unknown(client_id: str) -> Check:
    return Check(
        "ru_name",
        Status.FAIL,
        f"the emulator knows no application {client_id}",
        "register the keyset at the emulator (`ebay-connector emulator --client-id … "
        "--ru-name … --accept-url …`).",
    )


def ru_name_check(
    registered: RegisteredApp | None,
    *,
    ru_name: str,
    callback_url: str,
    connected_at: datetime | None,
) -> Check:
    """Is the RuName the keyset's, and does its accept URL lead to this deployment's callback?

    ``registered`` None: eBay does not publish a RuName's accept URL, so the proof is a seller's
    connect that completed (``connected_at``, the last code exchange eBay accepted).
    """
    if registered is None:
        if connected_at is not None:
            return Check(
                "ru_name",
                Status.OK,
                f"a seller's connect completed through RuName {ru_name} "
                f"(last {connected_at:%Y-%m-%d %H:%M} UTC)",
            )
        return Check(
            "ru_name",
            Status.WARN,
            f"eBay does not publish the accept URL of RuName {ru_name}, and no connect has "
            "completed yet",
            f"in the developer portal (User Tokens) set the RuName's accept URL to "
            f"{callback_url}, then connect a test seller.",
        )
    findings: list[Finding] = []
    if registered.ru_name != ru_name:
        findings.append(
            Finding(
                Status.FAIL,
                f"RuName {ru_name} is not the keyset's (it has {registered.ru_name})",
                f"set EBAY_CONNECTOR_RU_NAME={registered.ru_name}.",
            )
        )
    if registered.accept_url.rstrip("/") != callback_url.rstrip("/"):
        findings.append(
            Finding(
                Status.FAIL,
                f"the RuName's accept URL is {registered.accept_url}, not this deployment's "
                f"callback {callback_url}",
                f"set the RuName's accept URL to {callback_url} (or EBAY_CONNECTOR_PUBLIC_URL "
                "to the address it names).",
            )
        )
    return combine(
        "ru_name", findings, f"RuName {ru_name} accepts to this deployment's {callback_url}"
    )


# This deployment, as eBay's redirect and notifications reach it ----------------------------------


def callback_check(answer: PageAnswer, callback_url: str, environment: str) -> Check:
    """The callback answers as this product does (a 401 ``{"error": {"code": …}}`` without a
    session), at an address fit for the environment."""
    findings: list[Finding] = []
    if environment == "production" and urlsplit(callback_url).scheme != "https":
        findings.append(
            Finding(
                Status.FAIL,
                f"the callback {callback_url} is not https",
                "eBay's production accept URL must be https: serve behind TLS.",
            )
        )
    if answer.status is None:
        findings.append(
            Finding(
                Status.FAIL,
                f"{callback_url} did not answer: {answer.error}",
                "start `ebay-connector serve` or correct EBAY_CONNECTOR_PUBLIC_URL (and the "
                "proxy in front).",
            )
        )
    elif not _our_error(answer.body):
        findings.append(
            Finding(
                Status.FAIL,
                f"{callback_url} answered HTTP {answer.status}, not as ebay-connector does",
                "the public URL reaches something else: check the proxy's route to "
                "/api/ebay/callback.",
            )
        )
    return combine("callback", findings, f"{callback_url} answers (HTTP {answer.status})")


def _our_error(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return isinstance(error, dict) and isinstance(error.get("code"), str)


@dataclass(frozen=True)
class DeletionFacts:
    environment: str
    configured: bool  # a verification token is set
    exempt: bool  # EBAY_CONNECTOR_DELETION_EXEMPT
    endpoint: str  # the URL registered at eBay
    answer: PageAnswer | None  # the challenge's answer (None: not asked)
    expected: str | None  # the challengeResponse the endpoint must give


def deletion_check(facts: DeletionFacts) -> Check:
    name = "account_deletion"
    if not facts.configured:
        if facts.exempt:
            return Check(name, Status.OK, "exempted from account-deletion notifications")
        if facts.environment == "production":
            return Check(
                name,
                Status.FAIL,
                "no account-deletion endpoint: eBay keeps a production keyset disabled until "
                "it subscribes or is exempted",
                "set EBAY_CONNECTOR_DELETION_VERIFICATION_TOKEN and register "
                f"{facts.endpoint} in the developer portal (Alerts & Notifications), or set "
                "EBAY_CONNECTOR_DELETION_EXEMPT=true once eBay granted the exemption "
                "(docs/account-deletion.md).",
            )
        return Check(name, Status.OK, f"not required in {facts.environment}")
    findings: list[Finding] = []
    if facts.environment == "production" and (
        urlsplit(facts.endpoint).scheme != "https" or is_local_host(facts.endpoint)
    ):
        findings.append(
            Finding(
                Status.FAIL,
                f"the endpoint {facts.endpoint} is not a public https URL",
                "eBay accepts only https and no local address: set "
                "EBAY_CONNECTOR_DELETION_ENDPOINT_URL (or EBAY_CONNECTOR_PUBLIC_URL).",
            )
        )
    answer = facts.answer
    if answer is None or answer.status is None:
        findings.append(
            Finding(
                Status.FAIL,
                f"{facts.endpoint} did not answer the challenge: "
                f"{answer.error if answer else 'not asked'}",
                "start `ebay-connector serve` and check the proxy's route to it.",
            )
        )
    elif answer.status != 200 or _challenge_response(answer.body) != facts.expected:
        findings.append(
            Finding(
                Status.FAIL,
                f"{facts.endpoint} answered the challenge wrongly (HTTP {answer.status})",
                "EBAY_CONNECTOR_DELETION_VERIFICATION_TOKEN and "
                "EBAY_CONNECTOR_DELETION_ENDPOINT_URL must be exactly what the developer portal "
                "holds, in every process.",
            )
        )
    return combine(name, findings, f"{facts.endpoint} answers eBay's challenge")


def _challenge_response(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = parsed.get("challengeResponse") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None
