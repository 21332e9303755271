"""The proxy fine-tune: one (batch size, learning rate) on one model, dataset and method.

Read it top to bottom: `setup_proxy` loads the model and data and applies the method; `train_proxy`
runs the loop and returns a `RunRecord`. The effective batch (what the advisor recommends) is
micro-batch × accumulation; the micro-batch only decides what fits in memory and never changes the
maths, because every loss is a sum over target tokens divided by the effective batch's token count.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from advisor.errors import AdvisorError
from advisor.records import EvalPoint, OomEvent, RunConfig, RunRecord, RunStatus, StepMetrics
from advisor.specs import StudySpec
from proxy_runs.data import Example, PreparedData, collate, prepare_data, target_tokens
from proxy_runs.loss import summed_token_loss
from proxy_runs.meta import run_meta
from proxy_runs.methods import Method, build_method
from proxy_runs.models import LoadedModel, load_model_and_tokenizer
from proxy_runs.resume import RunCheckpoint, capture, check_resumable, restore

# A run has diverged when the loss is non-finite, or when one step's loss exceeds 3× the first step's,
# or the mean of the last 5 exceeds 1.5× it: LoRA runs at a too-high LR shoot up and stay up, while a
# merely noisy run never triples its starting loss.
SPIKE_FACTOR = 3.0
SUSTAINED_FACTOR = 1.5
SUSTAINED_WINDOW = 5
CPU_MICRO_BATCH = 16  # on CPU, larger micro-batches buy no throughput and cost memory
EVALS_PER_RUN = 5  # default evaluation points along a run (plus the end)


@dataclass
class RunBudget:
    """Where a run stops short of its training plan. Any bound left None is open."""

    max_steps: int | None = None
    max_examples: int | None = None
    max_seconds: float | None = None


@dataclass
class RunProgress:
    """What a stop hook sees after every optimizer step."""

    step: int
    examples_seen: int
    seconds: float
    train_loss: float
    eval_loss: float | None


StopHook = Callable[[RunProgress], bool]  # True: stop now (recorded as pruned)
PauseHook = Callable[[RunCheckpoint], object]  # receives the checkpoint of a run its stop hook stopped


@dataclass
class ProxySetup:
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    data: PreparedData
    method: Method
    device: torch.device
    loaded: LoadedModel

    @property
    def is_seq2seq(self) -> bool:
        return self.data.is_seq2seq


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def setup_proxy(
    spec: StudySpec, device: str | torch.device | None = None, data: PreparedData | None = None
) -> ProxySetup:
    """Load model and tokenizer, prepare the data (unless given) and apply the spec's method."""
    target = device if isinstance(device, torch.device) else pick_device(device)
    loaded = load_model_and_tokenizer(spec.model, spec.revision)
    if data is None:
        data = prepare_data(
            spec.dataset,
            loaded.tokenizer,
            is_seq2seq=loaded.is_seq2seq,
            max_seq_len=spec.training.max_seq_len,
            packing=spec.training.packing,
        )
    method = build_method(spec)
    torch.manual_seed(spec.training.seed)  # adapter initialisation is random
    model = method.wrap(loaded.model, is_seq2seq=loaded.is_seq2seq).to(target)
    return ProxySetup(model, loaded.tokenizer, data, method, target, loaded)


# 1. Schedules and batches ---------------------------------------------------------------------------


def planned_steps(n_train: int, spec: StudySpec, batch_size: int, budget: RunBudget) -> int:
    """Optimizer steps at `batch_size` over the real run's examples (epochs over the data, or its max_steps
    at its own batch), cut by the budget."""
    steps = math.ceil(spec.training.real_run_examples(n_train) / batch_size)
    if budget.max_steps is not None:
        steps = min(steps, budget.max_steps)
    if budget.max_examples is not None:
        steps = min(steps, math.ceil(budget.max_examples / batch_size))
    return max(steps, 1)


def lr_multiplier(step: int, total: int, warmup: int, shape: str) -> float:
    """Linear warm-up, then cosine or linear decay to 0 (or constant), as a factor of the peak LR."""
    if step < warmup:
        return (step + 1) / warmup
    if shape == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if shape == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def effective_batches(examples: list[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Endless effective batches; a fresh seeded shuffle each epoch, an epoch's tail continues the next."""
    rng, queue = random.Random(seed), list[Example]()
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        queue.extend(examples[i] for i in order)
        while len(queue) >= batch_size:
            yield queue[:batch_size]
            queue = queue[batch_size:]


def micro_batches(batch: list[Example], micro: int) -> list[list[Example]]:
    return [batch[i : i + micro] for i in range(0, len(batch), micro)]


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


# 2. Evaluation ----------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(setup: ProxySetup, examples: list[Example], micro: int, precision: str) -> float:
    """Token-weighted mean cross-entropy over `examples`."""
    setup.model.eval()
    pad_id = int(setup.tokenizer.pad_token_id)  # load_model_and_tokenizer guarantees a pad token
    loss_sum, tokens = 0.0, 0
    for chunk in micro_batches(examples, micro):
        batch = {
            k: v.to(setup.device) for k, v in collate(chunk, pad_id, is_seq2seq=setup.is_seq2seq).items()
        }
        with autocast_context(setup.device, precision):
            chunk_loss, chunk_tokens = summed_token_loss(setup.model, batch, is_seq2seq=setup.is_seq2seq)
        loss_sum, tokens = loss_sum + float(chunk_loss), tokens + chunk_tokens
    setup.model.train()
    return loss_sum / max(tokens, 1)


def untrained_eval_loss(setup: ProxySetup, spec: StudySpec, *, max_eval_examples: int) -> float | None:
    """The eval loss of the freshly set-up proxy, before any step: the base model's loss on the held-out
    split for every method whose adapter starts as the identity (LoRA, its variants, full fine-tuning).
    None without held-out examples. Outcomes reported above it are not fine-tunes of this model and data."""
    examples = setup.data.eval[:max_eval_examples]
    if not examples:
        return None
    # The loss is the same at any micro-batch (token-weighted); only memory depends on it.
    return evaluate(
        setup, examples, spec.training.micro_batch_size or CPU_MICRO_BATCH, spec.training.precision
    )


# 3. The loop --------------------------------------------------------------------------------------------


@dataclass
class _LoopState:
    step: int = 0
    examples_seen: int = 0
    tokens_seen: int = 0
    first_loss: float | None = None
    recent_losses: list[float] = field(default_factory=list)
    steps: list[StepMetrics] = field(default_factory=list)
    evals: list[EvalPoint] = field(default_factory=list)
    oom_events: list[OomEvent] = field(default_factory=list)
    diverged_at: dict[str, float | int | str] | None = None  # the step that diverged and its loss


def has_diverged(loss: float, state: _LoopState) -> bool:
    if not math.isfinite(loss):
        return True
    first = state.first_loss if state.first_loss is not None else loss
    window = state.recent_losses[-SUSTAINED_WINDOW:]
    sustained = len(window) == SUSTAINED_WINDOW and sum(window) / SUSTAINED_WINDOW > SUSTAINED_FACTOR * first
    return loss > SPIKE_FACTOR * first or sustained


def accumulate_gradients(
    setup: ProxySetup, batch: list[Example], micro: int, precision: str
) -> tuple[float, int]:
    """Forward and backward over the micro-batches of one effective batch; (mean loss, input tokens)."""
    pad_id = int(setup.tokenizer.pad_token_id)
    collated = [collate(chunk, pad_id, is_seq2seq=setup.is_seq2seq) for chunk in micro_batches(batch, micro)]
    total_targets = sum(target_tokens(b, is_seq2seq=setup.is_seq2seq) for b in collated)
    loss_sum, input_tokens = 0.0, 0
    for cpu_batch in collated:
        device_batch = {k: v.to(setup.device) for k, v in cpu_batch.items()}
        with autocast_context(setup.device, precision):
            chunk_loss, _ = summed_token_loss(setup.model, device_batch, is_seq2seq=setup.is_seq2seq)
        (chunk_loss / max(total_targets, 1)).backward()
        loss_sum += float(chunk_loss.detach())
        input_tokens += int(cpu_batch["attention_mask"].sum())
    return loss_sum / max(total_targets, 1), input_tokens


def train_proxy(
    spec: StudySpec,
    *,
    batch_size: int,
    learning_rate: float,
    budget: RunBudget | None = None,
    setup: ProxySetup | None = None,
    device: str | None = None,
    eval_every: int | None = None,
    eval_at_start: bool = True,
    max_eval_examples: int = 256,
    should_stop: StopHook | None = None,
    on_pause: PauseHook | None = None,
    resume: RunCheckpoint | None = None,
) -> RunRecord:
    """Fine-tune once at (batch_size, learning_rate) and return the run's record.

    Divergence, pruning by `should_stop` and run-time errors are results (statuses), not exceptions;
    only bad input (an `AdvisorError`) is raised.

    Pausing: when `should_stop` stops the run, `on_pause` receives its checkpoint; `resume` goes on from one
    (same batch size, LR, seed and plan; `setup` freshly built) as if the run had never stopped. The record of
    a resumed run holds the whole curve; its `seconds` and `examples_trained` count this call only.
    """
    if batch_size <= 0 or not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise AdvisorError(
            f"batch_size must be > 0 and learning_rate a positive number; got {batch_size}, {learning_rate}"
        )
    budget = budget or RunBudget()
    setup = setup or setup_proxy(spec, device)
    training = spec.training
    total_steps = planned_steps(len(setup.data.train), spec, batch_size, budget)
    warmup = round(training.warmup_fraction(len(setup.data.train)) * total_steps)
    default_micro = CPU_MICRO_BATCH if setup.device.type == "cpu" else batch_size
    micro = min(batch_size, training.micro_batch_size or default_micro)
    eval_every = eval_every or max(1, total_steps // EVALS_PER_RUN)
    eval_examples = setup.data.eval[:max_eval_examples]

    # 1. Seeds, optimizer and schedule. Seeds are set again here (setup may have been built earlier) so
    #    two runs with the same spec and hyperparameters see the same batches and dropout masks.
    torch.manual_seed(training.seed)
    model, method = setup.model, setup.method
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = method.build_optimizer(model, learning_rate, training)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total_steps, warmup, training.lr_scheduler)
    )
    method.start(total_steps)
    model.train()

    state, status, error = _LoopState(), RunStatus.SUCCESS, None
    batches = effective_batches(setup.data.train, batch_size, training.seed)
    identity = (batch_size, learning_rate, training.seed, total_steps)
    if resume is not None:
        check_resumable(resume, identity)
        state = restore(resume, model=model, optimizer=optimizer, schedule=schedule, device=setup.device)
        micro = resume.micro_batch
        for _ in range(state.step):  # the batches the paused run already trained on
            next(batches)
    earlier_seconds = resume.seconds if resume is not None else 0.0
    started = time.perf_counter() - earlier_seconds  # a resumed curve's clock goes on
    if eval_at_start and resume is None:
        state.evals.append(
            EvalPoint(
                step=0, examples_seen=0, eval_loss=evaluate(setup, eval_examples, micro, training.precision)
            )
        )
    try:
        while state.step < total_steps:
            batch = next(batches)
            step_started = time.perf_counter()
            # 2. Forward/backward over micro-batches. On CUDA out-of-memory, halve the micro-batch (the
            #    effective batch, and so the result, is unchanged) and redo the step.
            try:
                loss, input_tokens = accumulate_gradients(setup, batch, micro, training.precision)
            except RuntimeError as exc:
                if not is_out_of_memory(exc) or micro == 1:
                    raise
                optimizer.zero_grad(set_to_none=True)
                if setup.device.type == "cuda":
                    torch.cuda.empty_cache()
                state.oom_events.append(
                    OomEvent(step=state.step, micro_batch_before=micro, micro_batch_after=micro // 2)
                )
                micro //= 2
                batches = _requeue(batch, batches)
                continue
            # 3. Divergence is a result: stop and report it.
            if has_diverged(loss, state):
                status = RunStatus.DIVERGED
                state.diverged_at = {
                    "step": state.step + 1,
                    "loss": loss if math.isfinite(loss) else str(loss),
                }
                break
            # 4. Method hooks around the optimizer step; clipping after gradient surgery.
            method.before_optimizer_step(model, optimizer, state.step)
            limit = training.max_grad_norm if training.max_grad_norm is not None else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, limit))
            optimizer.step()
            method.after_optimizer_step(model, optimizer, state.step)
            optimizer.zero_grad(set_to_none=True)
            metrics = _advance(state, batch, loss, grad_norm, schedule, input_tokens, step_started, started)
            schedule.step()
            state.steps.append(metrics)
            state.first_loss = state.first_loss if state.first_loss is not None else loss
            state.recent_losses.append(loss)
            # 5. Evaluate at intervals and at the end; let the caller prune; honour the time budget.
            out_of_time = (
                budget.max_seconds is not None and time.perf_counter() - started >= budget.max_seconds
            )
            if state.step % eval_every == 0 or state.step == total_steps or out_of_time:
                state.evals.append(
                    EvalPoint(
                        step=state.step,
                        examples_seen=state.examples_seen,
                        eval_loss=evaluate(setup, eval_examples, micro, training.precision),
                    )
                )
            if should_stop and should_stop(_progress(state, started)):
                status = RunStatus.PRUNED
                if on_pause is not None:
                    seconds = time.perf_counter() - started
                    on_pause(
                        capture(
                            model=model,
                            optimizer=optimizer,
                            schedule=schedule,
                            loop=state,
                            config=identity,
                            micro_batch=micro,
                            seconds=seconds,
                            device=setup.device,
                        )
                    )
                break
            if out_of_time:
                break
    except AdvisorError:
        raise
    except Exception as exc:  # a failed run is recorded, with its cause, rather than lost
        status, error = RunStatus.FAILED, f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    record = _record(
        spec,
        setup,
        state,
        status,
        error,
        batch_size,
        learning_rate,
        micro,
        total_steps,
        warmup,
        time.perf_counter() - started - earlier_seconds,
    )
    if resume is not None:
        record.meta["resumed_from"] = {
            "step": resume.loop.step,
            "examples_seen": resume.examples_seen,
            "seconds": round(resume.seconds, 3),
        }
    return record


def _requeue(batch: list[Example], rest: Iterator[list[Example]]) -> Iterator[list[Example]]:
    yield batch
    yield from rest


def _advance(
    state: _LoopState,
    batch: list[Example],
    loss: float,
    grad_norm: float,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    input_tokens: int,
    step_started: float,
    started: float,
) -> StepMetrics:
    """Count a finished optimizer step into `state` and return its metrics."""
    state.step += 1
    state.examples_seen += len(batch)
    state.tokens_seen += input_tokens
    now = time.perf_counter()
    return StepMetrics(
        step=state.step,
        examples_seen=state.examples_seen,
        loss=loss,
        lr=float(schedule.get_last_lr()[0]),
        grad_norm=grad_norm,
        tokens_per_s=input_tokens / max(now - step_started, 1e-9),
        seconds=now - started,
    )


def _progress(state: _LoopState, started: float) -> RunProgress:
    return RunProgress(
        step=state.step,
        examples_seen=state.examples_seen,
        seconds=time.perf_counter() - started,
        train_loss=state.steps[-1].loss,
        eval_loss=state.evals[-1].eval_loss if state.evals else None,
    )


def _record(
    spec: StudySpec,
    setup: ProxySetup,
    state: _LoopState,
    status: RunStatus,
    error: str | None,
    batch_size: int,
    learning_rate: float,
    micro: int,
    total_steps: int,
    warmup: int,
    seconds: float,
) -> RunRecord:
    finite_evals = [e.eval_loss for e in state.evals if math.isfinite(e.eval_loss)]
    config = RunConfig(
        method=spec.method,
        rank=spec.rank,
        alpha=float(spec.alpha or spec.rank),
        batch_size=batch_size,
        learning_rate=learning_rate,
        micro_batch_size=micro,
        accumulation_steps=math.ceil(batch_size / micro),
        planned_steps=total_steps,
        warmup_steps=warmup,
        max_seq_len=spec.training.max_seq_len,
        seed=spec.training.seed,
        device=str(setup.device),
        precision=spec.training.precision,
    )
    return RunRecord(
        status=status,
        error=error,
        config=config,
        spec=spec.model_dump(mode="json"),
        eval_loss=state.evals[-1].eval_loss if state.evals and status != RunStatus.DIVERGED else None,
        best_eval_loss=min(finite_evals) if finite_evals and status != RunStatus.DIVERGED else None,
        final_train_loss=state.steps[-1].loss if state.steps else None,
        steps=state.step,
        examples_seen=state.examples_seen,
        tokens_seen=state.tokens_seen,
        seconds=seconds,
        trainable_params=sum(p.numel() for p in setup.model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in setup.model.parameters()),
        metrics={
            "steps": [s.model_dump() for s in state.steps],
            "evals": [e.model_dump() for e in state.evals],
            "oom_events": [o.model_dump() for o in state.oom_events],
            "diverged_at": state.diverged_at,
        },
        dataset_fingerprint=setup.data.fingerprint,
        meta=run_meta(setup.device, model_source=setup.loaded.source, model_revision=setup.loaded.revision),
    )
