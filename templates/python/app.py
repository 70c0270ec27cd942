"""{{name}}: a plugd plugin in Python (made with `plugd new {{name}} --lang python`).

Built by build.sh with componentize-py into a component that implements the contract in
wit/plugin.wit (`componentize-py -d wit -w plugin bindings .` writes the typed bindings, for an
editor). A `result<T, string>` is returned (ok) or raised as `Err(...)`; a host call that fails
raises `Err(host_error)`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import events, log, metrics, registry, storage
from wit_world.imports.http import Exchange
from wit_world.imports.types import (
    Action,
    Action_Continue,
    Action_Respond,
    Health,
    Health_Healthy,
    HookType,
    LogLevel,
    PluginMetadata,
    Response,
    RouteOptions,
)

# Per instance: state every call must see lives in storage.
greeting = "Hello"


def json_response(status: int, value) -> Response:
    return Response(status, [("content-type", "application/json")], json.dumps(value).encode())


class Guest(exports.Guest):
    def metadata(self) -> PluginMetadata:
        return PluginMetadata("{{name}}", "0.1.0", "componentize-py {{componentize_py}}")

    def init(self, config: str) -> None:
        """Runs on every instance with the validated config (defaults from plugin.yaml applied)."""
        global greeting
        greeting = json.loads(config).get("greeting", "Hello")
{{#route}}
        # Served at /plugins/{{name}}/hello; needs the `router` permission.
        registry.register_route("GET", "/hello", RouteOptions([]))
{{/route}}
        registry.subscribe("{{name}}.ping")
        registry.export_service("greeter")
        log.log(LogLevel.INFO, "ready", [])

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    def on_config_change(self, config: str) -> None:
        global greeting
        greeting = json.loads(config).get("greeting", "Hello")

    def health_check(self) -> Health:
        return Health_Healthy()

    def on_hook(self, hook: HookType, exchange: Exchange) -> Action:
{{#hook_pre_request}}
        if hook == HookType.PRE_REQUEST:
            if exchange.header("x-{{name}}-block") is not None:
                return Action_Respond(json_response(403, {"error": "blocked by {{name}}"}))
            exchange.set_header("x-{{name}}-seen", "1")
            return Action_Continue()
{{/hook_pre_request}}
{{#hook_post_request}}
        if hook == HookType.POST_REQUEST:
            exchange.set_response_header("x-{{name}}", "post_request")
            return Action_Continue()
{{/hook_post_request}}
{{#hook_pre_response}}
        if hook == HookType.PRE_RESPONSE:
            exchange.set_response_header("x-{{name}}", "pre_response")
            return Action_Continue()
{{/hook_pre_response}}
        log.log(LogLevel.INFO, f"{hook.name.lower()} hook ran", [])
        return Action_Continue()

    def handle_request(self, route: str, exchange: Exchange) -> Response:
{{#route}}
        if route == "/hello":
            name = exchange.query_param("name") or "world"
            stored = storage.get("count")
            count = (json.loads(stored) if stored is not None else 0) + 1
            storage.set("count", json.dumps(count).encode())
            metrics.counter_add("greetings", 1.0, [])
            events.publish("{{name}}.greeted", name.encode())
            log.log(LogLevel.INFO, "greeted", [("name", name)])
            return json_response(200, {"message": f"{greeting}, {name}!", "count": count})
{{/route}}
        raise Err(f"no handler for route {route}")

    def on_request(self, middleware: str, exchange: Exchange) -> Action:
        return Action_Continue()

    def on_response(self, middleware: str, exchange: Exchange) -> None:
        pass

    def on_event(self, topic: str, payload: bytes, source: str) -> None:
        if topic == "{{name}}.ping":
            storage.set("last-ping", payload)

    def call_service(self, service: str, method: str, payload: bytes, caller: str) -> bytes:
        """The exported service `greeter`."""
        if service == "greeter" and method == "greet":
            return f"{greeting}, {payload.decode()}!".encode()
        raise Err(f"unknown method {service}.{method}")

    def on_tick(self, timer: str) -> None:
        pass

    def run_command(self, command: str, args: list[str]) -> str:
        raise Err(f"unknown command: {command}")
