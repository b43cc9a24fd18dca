"""Usage to Stripe as billing meter events: ``POST /v1/billing/meter_events``, form-encoded
(``event_name``, ``payload[stripe_customer_id]``, ``payload[value]``, ``identifier``,
``timestamp``), the secret key as bearer token, and the identifier as ``Idempotency-Key`` too,
so a retried request gets Stripe's first answer back rather than counting twice."""

from __future__ import annotations

import httpx
import msgspec

from adapters.llm.http import redact
from application.billing.ports import MeterEvent
from application.errors import InvalidInput, ServiceUnavailable


class _Error(msgspec.Struct):
    message: str = ""
    type: str = ""
    code: str = ""


class _ErrorBody(msgspec.Struct):
    error: _Error


class _MeterEvent(msgspec.Struct):
    object: str
    event_name: str
    identifier: str
    payload: dict[str, str]


_error = msgspec.json.Decoder(_ErrorBody)
_event = msgspec.json.Decoder(_MeterEvent)


class StripeMeterReporter:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str,
        event_name: str,
        base_url: str = "https://api.stripe.com",
        api_version: str | None = None,
    ) -> None:
        if not api_key or not event_name:
            raise ValueError("Stripe metering needs a secret key and a meter event name")
        self._client = client
        self._key = api_key
        self._event_name = event_name
        self._url = base_url.rstrip("/") + "/v1/billing/meter_events"
        self._version = api_version

    async def report(self, event: MeterEvent) -> None:
        form = {
            "event_name": self._event_name,
            "payload[stripe_customer_id]": event.customer,
            "payload[value]": str(event.value),
            "identifier": event.identifier,
            "timestamp": str(event.timestamp_s),
        }
        headers = {
            "authorization": f"Bearer {self._key}",
            "idempotency-key": event.identifier,
        }
        if self._version:
            headers["stripe-version"] = self._version
        try:
            response = await self._client.post(self._url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"Stripe could not be reached ({type(exc).__name__})") from exc
        if response.status_code == 200:
            try:
                answer = _event.decode(response.content)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ServiceUnavailable(f"Stripe sent a malformed meter event: {exc}") from exc
            if answer.identifier != event.identifier:
                raise ServiceUnavailable("Stripe answered for another meter event")
            return
        try:
            detail = _error.decode(response.content).error
            reason = f"{detail.type or 'error'}: {detail.message}".strip()
        except (msgspec.DecodeError, msgspec.ValidationError):
            reason = f"HTTP {response.status_code}"
        text = redact(
            f"Stripe refused the meter event ({response.status_code}) {reason}", [self._key]
        )
        if response.status_code in (408, 409, 429) or response.status_code >= 500:
            raise ServiceUnavailable(text)
        raise InvalidInput(text)
