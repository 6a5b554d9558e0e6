"""compile_watch: Triton's post-compile hook counts and names the kernels compiled outside a warm-up.

There is no GPU here to compile on, so the hook is called as Triton's JIT calls it after a compile
(`JITFunction._do_compile`), with a real kernel of the engine."""

from __future__ import annotations

import logging
import threading

import pytest
from triton import knobs
from triton.runtime.jit import JitFunctionInfo

from glm_vision.engine import compile_watch
from glm_vision.engine.decode_attention_kernels import _merge_kernel


@pytest.fixture
def fresh_hook(monkeypatch):
    """Triton's hook slot with a hook of someone else's in it, and compile_watch not yet installed."""
    seen = []
    monkeypatch.setattr(knobs.runtime, "jit_post_compile_hook", lambda **kwargs: seen.append(kwargs["fn"].name))
    monkeypatch.setattr(compile_watch, "_installed", False)
    monkeypatch.setattr(compile_watch, "_compiled", 0)
    return seen


def compiled(chunk: int) -> None:
    """What Triton does once it has compiled a variant of the merge kernel."""
    names = _merge_kernel.arg_names
    constants = {(names.index("CHUNK"),): chunk, (names.index("PDL"),): True}
    knobs.runtime.jit_post_compile_hook(
        key="k",
        repr="_merge_kernel[...]",
        fn=JitFunctionInfo(_merge_kernel.__module__, "_merge_kernel", _merge_kernel),
        compile={"key": "k", "constants": constants, "num_warps": 4, "num_stages": 3},
        is_manual_warmup=False,
        already_compiled=False,
    )


def test_compiles_outside_a_warm_up_are_counted_and_named(fresh_hook, caplog):
    with compile_watch.warming_up() as installed:
        assert installed
        worker = threading.Thread(target=compiled, args=(16,))  # the engine's worker compiles, not the caller
        worker.start()
        worker.join()
    assert compile_watch.compiled_while_serving() == 0
    with caplog.at_level(logging.WARNING, logger=compile_watch.__name__):
        compiled(32)
        compiled(64)
    assert compile_watch.compiled_while_serving() == 2
    assert "_merge_kernel(CHUNK=32, PDL=True, num_warps=4, num_stages=3)" in caplog.text
    assert "CHUNK=16" not in caplog.text  # the warm-up's own compile is not reported
    assert fresh_hook == ["_merge_kernel"] * 3  # the hook that was there before still hears of every compile


def test_installed_once_however_many_engines_warm_up(fresh_hook):
    for _ in range(3):
        with compile_watch.warming_up():
            pass
    compiled(8)
    assert compile_watch.compiled_while_serving() == 1
    assert fresh_hook == ["_merge_kernel"]
