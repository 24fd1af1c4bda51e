"""Hooks with a context: `fn(activation, ctx)`, the state attach makes, prefill/decode, row maps, the
auxiliary-pass rule and keyword overrides, on a real tiny model's generate call."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

import halluc
from halluc.interventions import HookContext, HookSpec, Method, param, register
from halluc.interventions.aux import aux_pass, text_only_forward
from halluc.interventions.registry import unregister


@dataclass
class _Seen:
    owner: str
    calls: list = field(default_factory=list)


CREATED: list[_Seen] = []


def _new(owner: str) -> _Seen:
    CREATED.append(_Seen(owner))
    return CREATED[-1]


@dataclass(frozen=True)
class Probe(Method):
    """Records what its hooks see; runs its own auxiliary (text-only) pass at prefill."""

    name = "test-probe"
    alpha: float = param(1.0)

    def new_state(self):
        return _new(self.name)

    def hooks(self, session):
        def start(hidden, ctx: HookContext):
            ctx.state.calls.append(("start", ctx.layer, ctx.phase, ctx.in_aux, tuple(hidden.shape)))
            if ctx.prefill:
                with aux_pass(session, self.name):
                    text_only_forward(session)

        def watch(output, ctx: HookContext):  # forward hook on layer 1, also in the own pass
            rows = ctx.input_rows(output.shape[0]).tolist()
            ctx.state.calls.append(("watch", ctx.layer, ctx.phase, ctx.in_aux, rows))

        def lm_head(output, ctx: HookContext):
            with pytest.raises(RuntimeError, match="unknown at 'lm_head'"):
                ctx.prefill  # noqa: B018  (no cache at the head)
            ctx.state.calls.append(("head", ctx.layer, None, ctx.in_aux, None))
            return output * 1.0  # a replacement output

        return [HookSpec("layers.0", start, kind="forward_pre"), HookSpec("layers.1", watch, aux=True),
                HookSpec("lm_head", lm_head)]


@dataclass(frozen=True)
class Bystander(Method):
    """Another method's hook: never sees the probe's auxiliary pass."""

    name = "test-bystander"
    alpha: float = param(1.0)

    def new_state(self):
        return _new(self.name)

    def hooks(self, session):
        return [HookSpec("layers.1", lambda output, ctx: ctx.state.calls.append(ctx.in_aux))]


@pytest.fixture(scope="module", autouse=True)
def methods():
    register(Probe)
    register(Bystander)
    yield
    unregister("test-probe")
    unregister("test-bystander")


def _run(lvlm, images, methods, **decoding):
    """Each method's state from one generate call (their new_state() records what it makes)."""
    CREATED.clear()
    halluc.generate(lvlm, images, ["Describe.", "What?"], methods, max_new_tokens=3, **decoding)
    return {state.owner: state for state in CREATED}


def test_the_context_tells_phase_layer_rows_and_the_own_auxiliary_pass(tiny_llava, images):
    states = _run(tiny_llava, images, ["test-probe", "test-bystander"])
    calls = states["test-probe"].calls
    starts = [c for c in calls if c[0] == "start"]
    assert [c[2] for c in starts] == ["prefill", "decode", "decode"] and all(c[1] == 0 for c in starts)
    assert not any(c[3] for c in starts)  # layers.0 is not opted in: skipped in the text-only pass
    watched = [c for c in calls if c[0] == "watch"]
    assert [c[3] for c in watched[:2]] == [True, False]  # the own pass first (inside prefill), then the real one
    assert all(c[1] == 1 and c[4] == [0, 1] for c in watched)  # two samples, one row each
    assert len([c for c in calls if c[0] == "head"]) == 3
    assert states["test-bystander"].calls == [False, False, False]  # never inside the probe's pass


def test_rows_follow_beams(tiny_llava, images):
    states = _run(tiny_llava, images, ["test-probe"], num_beams=2)
    watched = [c for c in states["test-probe"].calls if c[0] == "watch" and not c[3]]
    assert watched[0][4] == [0, 0, 1, 1]  # each input row repeated in place for its beams


def test_state_is_fresh_for_every_call(tiny_llava, images):
    first = _run(tiny_llava, images, ["test-probe"])["test-probe"]
    second = _run(tiny_llava, images, ["test-probe"])["test-probe"]
    assert first is not second and len(first.calls) == len(second.calls)


def test_a_pre_hook_replaces_its_input_or_overrides_keyword_arguments():
    from halluc.interventions.hooks import register_hook

    class Scaled(torch.nn.Module):
        def forward(self, hidden_states, marker=1.0):
            return hidden_states * marker

    module, session, x = Scaled(), type("Session", (), {"state": {}})(), torch.ones(2, 3)
    handle = register_hook(module, HookSpec("model", lambda h, ctx: {"marker": 7.0}, kind="forward_pre"),
                           session, "test")
    assert torch.equal(module(x), x * 7) and torch.equal(module(hidden_states=x), x * 7)
    handle.remove()
    handle = register_hook(module, HookSpec("model", lambda h, ctx: h + 1, kind="forward_pre"), session, "test")
    assert torch.equal(module(x), x + 1) and torch.equal(module(hidden_states=x), x + 1)
    session.state["_aux_pass"] = "another-method"  # inside another method's auxiliary pass: skipped
    assert torch.equal(module(x), x)
    handle.remove()
