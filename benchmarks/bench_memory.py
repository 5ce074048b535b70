"""XLA's compiled memory of GraNd's batch program against a training step, piece by piece.

    python -m benchmarks.bench_memory [--model=resnet18] [--batch=32]

Each program is lowered and compiled (not run) for one seed, and `memory_analysis()` of the
compiled executable gives its argument, output and temporary buffer sizes; their sum is the
program's peak (XLA's buffer assignment, before allocator fragmentation). Rows:

- 'train': the pipeline's SGD step (`train.train_step`, BatchNorm in train mode);
- 'forward': the eval forward pass;
- 'grand': GraNd's batch program as `grand_scores` compiles it (the plan's site method);
- 'grand_backward_only': the same with every rule replaced by the squared norm of the output
  gradient, so the captured layer inputs are dead: the batched backward pass alone;
- 'grand_no_conv_rule': only the conv rule replaced that way (what the conv rule and its captured
  inputs add);
- 'grand_conv_direct' / 'grand_conv_gram': the conv rule forced to the direct `[B, kkC, O]`
  products or to the Gram identity `[B, T, T]` on every layer;
- 'grand_offsets_unrolled': the conv rule's sum over kernel offsets unrolled in Python instead of
  its `fori_loop` (XLA then holds every offset's slice of every layer at once);
- 'grand_conv_rule_deep_only' / '_shallow_only': the conv rule on the layers of >= 256 input
  channels (ResNet18's 8x8 and 4x4 stages) or on the others only, `_g_only` elsewhere;
- 'vmap_grad': per-example gradients of every param by `vmap(grad)`, then norms.

The first-batch guard (4 examples) is a separate program, run once per model and shapes in a
process, and the method race runs the batch programs themselves, so neither adds to the batch
program's peak. Writes one JSON line per row to stdout.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from benchmarks import timing

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "resnet18", "A model of datadiet_jax.models.")
flags.DEFINE_integer("batch", 32, "Batch size of every program.")


def compiled_mb(fn, *args) -> dict:
    """{'argument', 'output', 'temp', 'total'} MB of `jax.jit(fn)` compiled for `args`."""
    mem = jax.jit(fn).lower(*args).compile().memory_analysis()
    sizes = {
        "argument": mem.argument_size_in_bytes,
        "output": mem.output_size_in_bytes,
        "temp": mem.temp_size_in_bytes,
    }
    sizes["total"] = sum(sizes.values()) - mem.alias_size_in_bytes
    return {k: round(v / 2**20, 1) for k, v in sizes.items()}


def _g_only(x, g, *args):
    """A stand-in rule: the squared norm of the output gradient (keeps the backward pass)."""
    return jnp.sum(g.astype(jnp.float32).reshape(g.shape[0], -1) ** 2, axis=1)


def _unrolled_offset_sum(term, x, g, ksize, strides, padding):
    """The conv rule's sum over kernel offsets unrolled in Python (before its `fori_loop`)."""
    from datadiet_jax.scores.pergrad import rules

    return sum(term(p) for p in rules.shifted_inputs(x, ksize, strides, padding))


def _conv_forced(gram: bool):
    from datadiet_jax.scores.pergrad import rules

    def conv_sq_norm(x, g, ksize, strides, padding):
        g = g.reshape(g.shape[0], -1, g.shape[-1])
        args = (x, g, ksize, strides, padding)
        if gram:
            gram_x = rules._offset_sum(lambda p: rules._einsum("bti,bsi->bts", p, p), *args)
            return jnp.sum(gram_x * rules._einsum("bto,bso->bts", g, g), axis=(1, 2))
        direct = lambda p: jnp.sum(rules._einsum("bti,bto->bio", p, g) ** 2, axis=(1, 2))  # noqa: E731
        return rules._offset_sum(direct, *args)

    return conv_sq_norm


def _conv_where(keep):
    """The conv rule on layers of `keep(input channels)`, the stand-in `_g_only` elsewhere."""
    from datadiet_jax.scores.pergrad import rules

    conv = rules.conv_sq_norm
    return lambda x, g, *args: conv(x, g, *args) if keep(x.shape[-1]) else _g_only(x, g)


def _grand_rows(model, variables, images, labels) -> dict:
    from datadiet_jax.scores import model_form, programs
    from datadiet_jax.scores.pergrad import jaxpr_norms, rules
    from datadiet_jax.scores.pergrad import method as method_lib

    adapted, packed = model_form.from_pair(model, variables)
    one = jax.tree.map(lambda v: v[0], packed)
    method = method_lib.sites_method(
        isinstance(adapted, model_form.LinenModel), adapted.logits, one, images
    )
    mask = jnp.ones(labels.shape, jnp.float32)
    variants = {
        "grand": {},
        "grand_backward_only": {
            (rules, "site_sq_norm"): lambda site, a, g: _g_only(a, g),
            (jaxpr_norms, "_dense_sq_norm"): lambda e, s, a, g: _g_only(a, g),
            (jaxpr_norms, "_conv_sq_norm"): _g_only,
            (jaxpr_norms, "_embed_sq_norm"): _g_only,
        },
        "grand_no_conv_rule": {(rules, "conv_sq_norm"): _g_only},
        "grand_conv_direct": {(rules, "conv_sq_norm"): _conv_forced(False)},
        "grand_conv_gram": {(rules, "conv_sq_norm"): _conv_forced(True)},
        "grand_offsets_unrolled": {(rules, "_offset_sum"): _unrolled_offset_sum},
        "grand_conv_rule_deep_only": {(rules, "conv_sq_norm"): _conv_where(lambda c: c >= 256)},
        "grand_conv_rule_shallow_only": {(rules, "conv_sq_norm"): _conv_where(lambda c: c < 256)},
    }
    rows = {}
    for name, patches in variants.items():
        saved = {key: getattr(*key) for key in patches}
        try:
            for (mod, attr), fn in patches.items():
                setattr(mod, attr, fn)
            programs.clear_programs()
            program = programs.batch_program(adapted, "grand", "unroll", method=method)
            rows[name] = compiled_mb(program, packed, images, labels, mask)
        finally:
            for (mod, attr), fn in saved.items():
                setattr(mod, attr, fn)
            programs.clear_programs()
    rows["grand"]["method"] = method
    return rows


def main(argv) -> None:
    del argv
    from configs import fashion_mnist
    from datadiet_jax.models import get_model
    from datadiet_jax.scores import api
    from datadiet_jax.scores.pergrad import fallback
    from datadiet_jax.training import train

    rng = np.random.default_rng(0)
    shape = (28, 28, 1) if FLAGS.model == "small_cnn" else (32, 32, 3)
    images = jnp.asarray(rng.normal(size=(FLAGS.batch, *shape)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, FLAGS.batch), jnp.int32)
    model = get_model(FLAGS.model, 10)
    variables = api.init_variables(model, jax.random.key(0), 1, images[:1])
    one = jax.tree.map(lambda v: v[0], variables)
    apply_fn = lambda v, x: model.apply(v, x, train=False)  # noqa: E731

    tx = train.make_optimizer(fashion_mnist.get_config().train, 1000)
    state = train.create_train_state(jax.random.key(0), model, tx, images[:1])
    batch = {"image": images, "label": labels, "mask": jnp.ones((FLAGS.batch,), jnp.float32)}
    rows = {
        "train": compiled_mb(
            functools.partial(train.train_step, model, tx, fast=True), state, batch
        ),
        "forward": compiled_mb(apply_fn, one, images),
        **_grand_rows(model, variables, images, labels),
        "vmap_grad": compiled_mb(
            lambda v, x, y: jnp.sqrt(fallback.linen_sq_norms(apply_fn, v, x, y)),
            one,
            images,
            labels,
        ),
    }
    info = timing.machine()
    for name, row in rows.items():
        ratio = row["total"] / rows["train"]["total"]
        print(
            json.dumps(
                {
                    "model": FLAGS.model,
                    "batch": FLAGS.batch,
                    "program": name,
                    **row,
                    "vs_train": round(ratio, 2),
                    "cpu": info["cpu"],
                    "xla_flags": info["xla_flags"],
                }
            )
        )
    logging.info("compiled memory of %d programs written", len(rows))


if __name__ == "__main__":
    app.run(main)
