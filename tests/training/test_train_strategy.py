"""The pure parts of distributed training: strategy choice, the data schedule, the context."""

from __future__ import annotations

import pytest

from llm_sft.distributed import DistContext
from llm_sft.hyperparameters import HyperparameterError, parse_hyperparameters
from llm_sft.strategy import StrategyError, choose_strategy
from llm_sft.trainer import Schedule

GIB = 1024**3


def choose(**overrides: object) -> tuple[str, str]:
    arguments: dict[str, object] = {
        "requested": "auto",
        "method": "lora",
        "world_size": 8,
        "parameters": 8_000_000_000,
        "gpu_memory_bytes": 80 * GIB,
    }
    arguments.update(overrides)
    choice = choose_strategy(**arguments)  # type: ignore[arg-type]
    return choice.strategy, choice.reason


def test_ddp_when_the_model_fits_one_gpu() -> None:
    strategy, reason = choose()  # 8B in bf16: ~14.9 GiB of 80
    assert strategy == "ddp"
    assert "14.9 GiB of frozen weights fit one of the 80.0 GiB GPUs" in reason


def test_fsdp_when_it_does_not() -> None:
    strategy, reason = choose(parameters=70_000_000_000)  # ~130 GiB
    assert strategy == "fsdp"
    assert "sharded over 8 GPUs (16.3 GiB each)" in reason


def test_one_process_and_cpu() -> None:
    assert choose(world_size=1)[0] == "single"
    assert choose(gpu_memory_bytes=None)[0] == "ddp"


def test_an_explicit_strategy_is_obeyed() -> None:
    assert choose(requested="fsdp")[0] == "fsdp"
    assert choose(requested="ddp", parameters=70_000_000_000)[0] == "ddp"
    assert choose(requested="ddp", world_size=1)[0] == "ddp"  # torchrun with one process


def test_qlora_composes_with_ddp_and_is_refused_with_fsdp() -> None:
    assert choose(method="qlora", parameters=70_000_000_000)[0] == "ddp"  # ~36 GiB in 4 bits
    with pytest.raises(StrategyError, match="use distributed_strategy=ddp to run QLoRA"):
        choose(method="qlora", requested="fsdp")
    with pytest.raises(StrategyError, match="use method=lora"):
        choose(method="qlora", parameters=70_000_000_000, gpu_memory_bytes=24 * GIB)


def test_hyperparameters() -> None:
    hp = parse_hyperparameters(
        {"model_id": "m", "distributed_strategy": "fsdp", "attn_implementation": "flex_attention"}
    )
    assert (hp.distributed_strategy, hp.attn_implementation) == ("fsdp", "flex_attention")
    assert parse_hyperparameters({"model_id": "m"}).distributed_strategy == "auto"
    with pytest.raises(HyperparameterError, match="expected one of auto, ddp, fsdp"):
        parse_hyperparameters({"model_id": "m", "distributed_strategy": "zero3"})
    # What the SageMaker SDK adds for torch_distributed is not a training hyperparameter.
    parse_hyperparameters({"model_id": "m", "sagemaker_torch_distributed_enabled": "true"})


def test_every_process_trains_its_slice_of_the_single_process_micro_batches() -> None:
    two = Schedule(rows=37, batch_size=2, accumulation=3, seed=7, world_size=2)
    one = Schedule(rows=37, batch_size=4, accumulation=3, seed=7)
    assert two.steps_per_epoch == one.steps_per_epoch == 4
    for step in range(2 * one.steps_per_epoch):  # two epochs: the order changes, still equal
        rank0, rank1 = two.micro_batches(step, 0), two.micro_batches(step, 1)
        merged = [a + b for a, b in zip(rank0, rank1, strict=True)]
        assert [m for m in merged if m] == [m for m in one.micro_batches(step) if m]


def test_the_last_step_of_an_epoch_may_leave_a_process_without_rows() -> None:
    schedule = Schedule(rows=13, batch_size=2, accumulation=2, seed=0, world_size=2)
    last = schedule.steps_per_epoch - 1  # 13 rows, 8 per step: 5 rows in the last step
    assert [len(b) for b in schedule.micro_batches(last, 0)] == [2, 1]
    assert [len(b) for b in schedule.micro_batches(last, 1)] == [2, 0]
    assert not schedule.micro_batch_is_empty(last, 1)
    sparse = Schedule(rows=9, batch_size=2, accumulation=2, seed=0, world_size=2)
    assert sparse.micro_batch_is_empty(sparse.steps_per_epoch - 1, 1)  # 1 row left: one batch


def test_context_from_torchrun_environment() -> None:
    assert DistContext.from_env({}) == DistContext()
    ctx = DistContext.from_env(
        {"RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    )
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.nodes) == (5, 16, 1, 4)
    assert ctx.launched
    assert not ctx.is_main


@pytest.mark.parametrize(
    ("capability", "expected"),
    [(9, "flex_attention"), (8, "sdpa"), (7, "sdpa")],
)
def test_auto_attention_on_gpu_follows_the_measurement(
    monkeypatch: pytest.MonkeyPatch, capability: int, expected: str
) -> None:
    """flex_attention was measured faster than sdpa on packed rows on Hopper only (H200,
    make bench-train-gpu); other GPUs keep sdpa, and CPU the library default."""
    from llm_sft import modeling

    monkeypatch.setattr(modeling, "_gpu_capability_major", lambda: capability)
    monkeypatch.setattr(modeling.importlib.util, "find_spec", lambda name: None)  # no flash-attn
    hp = parse_hyperparameters({"model_id": "m"})
    assert modeling.resolve_attention(hp, cuda=True) == expected
    assert modeling.resolve_attention(hp, cuda=False) is None
