"""Label probabilities from one constrained answer (vLLM structured outputs `choice`).

vLLM applies the choice grammar's mask to the logits before it computes logprobs, so the
logprobs of a constrained answer are the model's next-token distribution renormalised over
the tokens the grammar allows. Under constrained decoding a label's probability is the product
of these conditionals along its tokens: one path through the token trie of the labels, which
labels sharing a prefix ("Social harm", "Social bias") share up to where they part. One answer
walks one path; its top logprobs show, at every step, the tokens beside it:

- the answer's label gets the product along its path;
- a token beside the path leads to the labels its text continues towards. Its mass (the path
  so far times its conditional) goes to them: all of it when it leads to one label (whose
  remaining tokens are then forced), split evenly when it leads to several;
- mass the top logprobs leave unlisted (more allowed tokens than listed) is split evenly over
  the labels that no listed token leads to.

So the distribution sums to one and costs one request. Exact: the answer's path, and every
label a listed token leads to alone. Estimated: how one token's mass divides among several
labels behind it, and unlisted mass. A label that holds at least half the mass on one token
path wins every step of that path, so greedy decoding answers it: a threshold delta >= 0.5
(the specs') sees its exact path probability.

At temperature 0 the answer is the most probable label, as with the other backends: greedy
decoding walks the locally best tokens, and a label beside its path can hold more mass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tasks.engines.base import ChatRequest

# One generated token: its text, its logprob, and the top (text, logprob) at that step.
Step = tuple[str, float, Sequence[tuple[str, float]]]


def _leads_to(labels: Sequence[str], prefix: str, text: str) -> list[str]:
    """The labels an answer reaches after `prefix` + `text`: those it is a prefix of, or, for
    a token that ends the answer (end-of-turn, whatever its text), the label `prefix` itself."""
    continued = [label for label in labels if text and label.startswith(prefix + text)]
    if continued:
        return continued
    return [prefix] if prefix in labels else []


def _share_out(mass: dict[str, float], labels: Sequence[str], prefix: str, path: float, step: Step) -> None:
    """Give the labels behind each token beside the answer's own their share of this step."""
    token, logprob, top = step
    entries = [(text, value) for text, value in top if math.isfinite(value)]  # masked tokens come as -inf
    if all(text != token for text, _ in entries):
        entries.append((token, logprob))
    covered: set[str] = set()
    listed = 0.0
    for text, value in entries:
        probability = math.exp(value)
        listed += probability
        targets = _leads_to(labels, prefix, text)
        covered.update(targets)
        if text != token:
            for label in targets:
                mass[label] += path * probability / len(targets)
    under = [label for label in labels if label.startswith(prefix)]
    unlisted = [label for label in under if label not in covered] or under
    for label in unlisted:
        mass[label] += path * max(0.0, 1.0 - listed) / len(unlisted)


def label_logprobs(labels: Sequence[str], steps: Sequence[Step]) -> dict[str, float] | None:
    """Log-probability of every label reached, from one constrained answer's token logprobs
    (see the module doc); None when the answer is not a whole label (cut off)."""
    mass = dict.fromkeys(labels, 0.0)
    prefix, path = "", 1.0
    for step in steps:
        token, logprob, _ = step
        _share_out(mass, labels, prefix, path, step)
        path *= math.exp(logprob)
        if _leads_to(labels, prefix, token) == [prefix]:
            break  # the end-of-turn token: the answer is `prefix`
        prefix += token
    if prefix not in mass:
        return None
    mass[prefix] += path
    return {label: math.log(value) for label, value in mass.items() if value > 0}


def most_probable_at_temperature_zero(request: ChatRequest, answer: str,
                                      distribution: Mapping[str, float] | None) -> str:
    """The label a temperature-0 request answers: the distribution's most probable one (the
    sampled `answer` at higher temperatures, or when there is no distribution)."""
    if request.sampling.temperature > 0 or not distribution:
        return answer
    return max(distribution, key=lambda label: distribution[label])
