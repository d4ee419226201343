from __future__ import annotations

from pathlib import Path

from emulator.routing import Router
from emulator.template import FunctionSpec, HttpRoute


def _router() -> Router:
    def spec(name: str, *routes: tuple[str, str]) -> FunctionSpec:
        return FunctionSpec(name, "m.h", Path("."), routes=tuple(HttpRoute(p, m, "2.0") for p, m in routes))

    functions = [spec("Proxy", ("/{proxy+}", "ANY")), spec("Items", ("/items/{id}", "GET")), spec("Root", ("/", "ANY"))]
    return Router({f.name: f for f in functions + [spec("New", ("/items/new", "ANY"))]})


def test_most_specific_route_wins() -> None:
    router = _router()
    assert router.match("GET", "/items/new").function == "New"  # type: ignore[union-attr]
    item = router.match("GET", "/items/42")
    assert item is not None and (item.function, item.path_parameters) == ("Items", {"id": "42"})
    proxy = router.match("POST", "/items/42")
    assert proxy is not None and (proxy.function, proxy.path_parameters) == ("Proxy", {"proxy": "items/42"})
    assert router.match("GET", "/").function == "Root"  # type: ignore[union-attr]


def test_greedy_parameter_needs_a_segment() -> None:
    router = Router({"P": FunctionSpec("P", "m.h", Path("."), routes=(HttpRoute("/{proxy+}", "ANY", "2.0"),))})
    assert router.match("GET", "/") is None
