"""API Gateway route matching: which function an HTTP request goes to.

As in API Gateway: a path with more literal segments wins over one with parameters, a
parameter over a greedy ``{proxy+}``, and a route's own method over ``ANY``. A greedy
parameter needs at least one segment, so ``/{proxy+}`` does not match ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from emulator.template import FunctionSpec, HttpRoute

_PARAMETER = re.compile(r"^\{([A-Za-z0-9_.-]+)(\+?)\}$")


@dataclass(frozen=True)
class Match:
    function: str
    route: HttpRoute
    path_parameters: dict[str, str]


@dataclass(frozen=True)
class _Compiled:
    function: str
    route: HttpRoute
    pattern: re.Pattern[str]
    specificity: tuple[int, int, int, int]


def _compile(function: str, route: HttpRoute) -> _Compiled:
    parts, literals, parameters, greedy = [], 0, 0, 0
    for segment in route.path.strip("/").split("/") if route.path.strip("/") else []:
        parameter = _PARAMETER.match(segment)
        if parameter is None:
            parts.append(re.escape(segment))
            literals += 1
        elif parameter.group(2):
            parts.append(f"(?P<{_group(parameter.group(1))}>.+)")
            greedy = 1
        else:
            parts.append(f"(?P<{_group(parameter.group(1))}>[^/]+)")
            parameters += 1
    pattern = re.compile("^/" + "/".join(parts) + "/?$" if parts else "^/$")
    return _Compiled(function, route, pattern, (1 - greedy, literals, parameters, int(route.method != "ANY")))


def _group(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)


class Router:
    def __init__(self, functions: Mapping[str, FunctionSpec]) -> None:
        self._routes = [_compile(spec.name, route) for spec in functions.values() for route in spec.routes]

    def routes(self) -> list[tuple[str, HttpRoute]]:
        return [(compiled.function, compiled.route) for compiled in self._routes]

    def match(self, method: str, path: str) -> Match | None:
        candidates = []
        for compiled in self._routes:
            if compiled.route.method not in ("ANY", method.upper()):
                continue
            found = compiled.pattern.match(path)
            if found is not None:
                candidates.append((compiled.specificity, compiled, found))
        if not candidates:
            return None
        _, best, found = max(candidates, key=lambda candidate: candidate[0])
        names = [m.group(1) for m in map(_PARAMETER.match, best.route.path.strip("/").split("/")) if m is not None]
        parameters = {name: found.group(_group(name)) for name in names}
        return Match(best.function, best.route, parameters)
