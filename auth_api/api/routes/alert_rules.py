"""Alert rules on any model's predictions: created, listed, changed and deleted by their owner (admins: anyone's)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status
from starlette.concurrency import run_in_threadpool

from auth_api.alerts import store
from auth_api.alerts.models import AlertRule, AlertRuleCreate, AlertRuleCreated, AlertRulePublic, AlertRuleUpdate
from auth_api.alerts.webhooks import validate_url
from auth_api.api.params import Id
from auth_api.api.strict_query import no_unknown_query
from auth_api.authn import Principal
from auth_api.core.errors import Forbidden, InvalidInput
from auth_api.deps import GatewayDep, UserPrincipal
from auth_api.state import Gateway
from mlstack.repository.layout import model_names

router = APIRouter(prefix="/alert-rules", tags=["alerts"], dependencies=[Depends(no_unknown_query)])


def _invalid(field: str, message: str, code: str = "invalid_alert_rule") -> InvalidInput:
    return InvalidInput(message, code=code, details={"field": field})


async def _check(gw: Gateway, p: Principal, *, model: str | None, channels: list[str], webhook_url: str | None,
                 scope: str | None) -> None:
    """What the schema cannot say: a known model, a webhook URL exactly when the webhook channel is on, its policy."""
    if scope == "all" and p.role != "admin":
        raise Forbidden("only admins may create rules with scope 'all'", code="insufficient_role", details={"field": "scope"})
    if model is not None:
        names = await run_in_threadpool(model_names, gw.catalog.repo)
        if names and model not in names:
            raise _invalid("model", f"no model named {model!r} in the repository", "unknown_model")
    if "webhook" in channels and not webhook_url:
        raise _invalid("webhook_url", "the webhook channel needs a webhook_url")
    if webhook_url and "webhook" not in channels:
        raise _invalid("channels", "a webhook_url needs the 'webhook' channel")
    if webhook_url:
        await run_in_threadpool(validate_url, webhook_url, gw.settings.alert_webhook_allow_private)


@router.post("", response_model=AlertRuleCreated, status_code=status.HTTP_201_CREATED)
async def create_rule(body: AlertRuleCreate, p: UserPrincipal, gw: GatewayDep) -> AlertRuleCreated:
    """A rule on your predictions of ``model``; the response holds the only copy of the webhook signing secret."""
    await _check(gw, p, model=body.model, channels=list(body.channels), webhook_url=body.webhook_url, scope=body.scope)
    rule = await gw.run_db(store.create_rule, p, body)
    return AlertRuleCreated.model_validate(rule, from_attributes=True)


@router.get("", response_model=list[AlertRulePublic])
async def list_rules(p: UserPrincipal, gw: GatewayDep, model: str | None = None) -> list[AlertRule]:
    """Your rules (admins: everyone's and the built-in ones), optionally on one model."""
    return await gw.run_db(store.list_rules, p, model)


@router.get("/{rule_id}", response_model=AlertRulePublic)
async def get_rule(rule_id: Id, p: UserPrincipal, gw: GatewayDep) -> AlertRule:
    """One rule (404 for someone else's)."""
    return await gw.run_db(store.get_rule, p, rule_id)


@router.patch("/{rule_id}", response_model=AlertRulePublic)
async def update_rule(rule_id: Id, body: AlertRuleUpdate, p: UserPrincipal, gw: GatewayDep) -> AlertRule:
    """Change the given fields; a built-in rule is kept by code and cannot be changed here."""
    rule = await gw.run_db(store.get_rule, p, rule_id)
    if rule.scope == "builtin" and set(body.model_fields_set) - {"enabled"}:
        raise Forbidden("a built-in rule can only be enabled or disabled", code="builtin_rule")
    channels = list(body.channels if body.channels is not None else rule.channels)
    url = body.webhook_url if "webhook_url" in body.model_fields_set else rule.webhook_url
    await _check(gw, p, model=None, channels=channels, webhook_url=url, scope=body.scope)
    return await gw.run_db(store.update_rule, rule, body)


@router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(rule_id: Id, p: UserPrincipal, gw: GatewayDep) -> Response:
    """Delete a rule; the alerts it raised stay."""
    rule = await gw.run_db(store.get_rule, p, rule_id)
    if rule.scope == "builtin":
        raise Forbidden("a built-in rule cannot be deleted (disable it instead)", code="builtin_rule")
    await gw.run_db(store.delete_rule, rule)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
