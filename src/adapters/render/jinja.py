"""Templates in Jinja's immutable sandbox: no attribute starting with an underscore, no
function or method the sandbox deems unsafe, no mutation of the data, no loader (so no
``include``, ``import`` or ``extends`` reaches a file), undefined names fail, and output is
cut off at a size limit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from application.errors import TemplateFailed


class SandboxedTemplateEngine:
    def __init__(self, *, max_output_chars: int = 2_000_000) -> None:
        self._env = ImmutableSandboxedEnvironment(
            loader=None,
            autoescape=False,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self._max = max_output_chars

    def render(self, source: str, data: Mapping[str, Any]) -> str:
        try:
            template = self._env.from_string(source)
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
