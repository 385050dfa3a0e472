"""What a generation request is made of, checked without TensorFlow: the sampling settings and
the prompts.

`SamplingSettings` is the one type every door takes (the sample stage, `charrnn generate`, HTTP,
the MLflow pyfunc model): its fields and their defaults are the sample.* params', and it is
checked by the params' own rules, in the precision the graph computes with (float32). Adding a
sampling control means a field here, a param in params.py and its use in generation.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from charrnn.core.errors import CharrnnError
from charrnn.core.params import MAX_NUM_CHARS, MAX_PROMPTS, SampleParams, problem
from charrnn.data.vocab import Vocabulary

PROMPT_HINT = ("in the pipeline, set them with -S 'sample.prompts=[\"...\"]', or sample.prompts: [] to draw "
               "prompts from the held-out text")


class SettingsError(CharrnnError, ValueError):
    """A request that no generator can run: the message names every problem."""


_DEFAULTS = SampleParams()


@dataclass(frozen=True)
class SamplingSettings:
    """How to continue each prompt. Defaults: params.yaml's sample.* (SampleParams)."""

    num_chars: int = _DEFAULTS.num_chars  # characters generated after each prompt
    temperature: float = _DEFAULTS.temperature  # softmax(logits / temperature)
    top_k: int = _DEFAULTS.top_k  # the k most likely characters only (0: off)
    top_p: float = _DEFAULTS.top_p  # the nucleus of this much probability (1.0: off)
    seed: int = _DEFAULTS.seed  # same seed, same text

    @classmethod
    def from_params(cls, sample: SampleParams) -> "SamplingSettings":
        return cls(**{name: getattr(sample, name) for name in cls.names()})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def parse(cls, values: dict, base: "SamplingSettings | None" = None,
              max_chars: int = MAX_NUM_CHARS) -> "SamplingSettings":
        """Settings from loose values (JSON, MLflow params, options) over `base`, checked."""
        settings = dataclasses.replace(base or cls(), **values)
        settings.check(max_chars)
        # as the graph takes them: a temperature of 1 from JSON becomes 1.0
        return cls(*(type(getattr(_DEFAULTS, f.name))(getattr(settings, f.name)) for f in fields(cls)))

    def replace(self, **changes) -> "SamplingSettings":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def problems(self, max_chars: int = MAX_NUM_CHARS) -> list[str]:
        """Each setting by the rule of the sample.* param of its name; num_chars up to `max_chars`."""
        wrong = [f"{name} {why}" for name in self.names() if name != "num_chars"
                 if (why := problem(f"sample.{name}", getattr(self, name)))]
        n = self.num_chars
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_chars:
            raised = isinstance(n, int) and not isinstance(n, bool) and n > max_chars
            wrong.insert(0, f"num_chars must be an integer from 1 to {max_chars:,}, got {n!r}"
                            + (" (raise the cap with --max-chars)" if raised else ""))
        return wrong

    def check(self, max_chars: int = MAX_NUM_CHARS) -> None:
        wrong = self.problems(max_chars)
        if wrong:
            raise SettingsError("; ".join(wrong))


def check_prompts(vocab: Vocabulary, prompts: list[str], max_prompts: int = MAX_PROMPTS) -> list[str]:
    """Raise for prompts the model cannot start from; return warnings for usable prompts holding
    characters outside the vocabulary (they are read as [UNK])."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise SettingsError("give a non-empty list of prompts, e.g. ['ROMEO:']")
    if len(prompts) > max_prompts:
        raise SettingsError(f"at most {max_prompts} prompts at once, got {len(prompts)}")
    warnings = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise SettingsError(f"prompt {i} must be a string, got {type(prompt).__name__} {prompt!r:.40}")
        if not prompt:
            raise SettingsError(f"prompt {i} is empty: give at least one character to start from")
        if problem("sample.prompts", [prompt]):
            raise SettingsError(f"prompt {i} is not valid Unicode text (a lone surrogate): {prompt!r}")
        unknown = vocab.unknown_chars(prompt)
        if len(unknown) == len(set(prompt)):
            raise SettingsError(f"prompt {i} ({prompt[:40]!r}) has no character of the model's vocabulary: "
                                f"start from characters the model was trained on; {PROMPT_HINT}")
        if unknown:
            warnings.append(f"prompt {i} ({prompt[:40]!r}) has characters outside the vocabulary, read as "
                            f"[UNK]: {''.join(unknown)!r}")
    return warnings
