"""Templates in Jinja's immutable sandbox: no attribute starting with an underscore, no
function or method the sandbox deems unsafe, no mutation of the data, no loader (so no
``include``, ``import`` or ``extends`` reaches a file), undefined names fail, and output is
cut off at a size limit. Compiled templates are kept in a small LRU keyed by their source, so
a template used again is not parsed and compiled again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from application.errors import TemplateFailed


class SandboxedTemplateEngine:
    def __init__(self, *, max_output_chars: int = 2_000_000, cache_size: int = 128) -> None:
        self._env = ImmutableSandboxedEnvironment(
            loader=None,
            autoescape=False,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self._max = max_output_chars
        self._cache_size = cache_size
        self._compiled: OrderedDict[str, Template] = OrderedDict()
        # Rendering runs in worker threads; the LRU's reordering is guarded.
        self._lock = threading.Lock()

    def _template(self, source: str) -> Template:
        with self._lock:
            found = self._compiled.get(source)
            if found is not None:
                self._compiled.move_to_end(source)
                return found
        template = self._env.from_string(source)
        with self._lock:
            self._compiled[source] = template
            while len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        return template

    def render(self, source: str, data: Mapping[str, Any]) -> str:
        try:
            template = self._template(source)
            out: list[str] = []
            size = 0
            for piece in template.generate(**dict(data)):
                size += len(piece)
                if size > self._max:
                    raise TemplateFailed(
                        f"the rendered document is longer than {self._max} characters"
                    )
                out.append(piece)
            return "".join(out)
        except SecurityError as exc:
            raise TemplateFailed(f"the template tried something not allowed: {exc}") from exc
        except TemplateError as exc:
            raise TemplateFailed(f"the template is invalid: {exc}") from exc
        except TemplateFailed:
            raise
        except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
            raise TemplateFailed(f"the template failed: {type(exc).__name__}: {exc}") from exc
