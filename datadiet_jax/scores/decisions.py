"""The process-lifetime cache of the scores' fixed-cost decisions, each paid once per signature.

Before its first scored batch a scores call decides:

- the batch check's pass (`batch_check.py`): two forward passes of the first batch;
- GraNd's site finder (`pergrad/method.sites_method`): traces the model;
- the guard's verdict (`pergrad/guard.py`): the site keys left to the exact fallback;
- GraNd's method (`pergrad/method.Race`): the sites' program or `vmap(grad)`, timed on the call's
  own first batches.

Later calls with the same `signature` reuse them. The signature is everything these decisions
read: the model form (hashable forms only; `programs` caches compiled programs by the same
form), the variables' tree structure and per-leaf shapes and dtypes (K included), the batch's
shape and dtype (the batch size and the example shape), the seed axis, the mesh and
`jax.default_backend()`. What reruns when only values change, and why:

- The site finder and the method read structure only: which params feed which operations, and
  programs' speed at these shapes. Cached by the signature.
- The guard judges structure (a rule misread, a layer whose rows are examples in another order,
  weight sharing) that shows at any values, except where the values hide it: a site whose
  gradient is (nearly) zero on the checked examples (a zero-initialized head zeroes every
  gradient below it) agrees with any rule. So a verdict is cached only when every site it
  passed exceeded `guard.JUDGED` (the guard's floor) of an example's squared norm; otherwise
  the guard reruns in every call (as it would without the cache), and a cached method is kept
  only while the verdict stays the same. A decided `vmap(grad)` needs no guard (no rules).
- The batch check's verdict depends on values: a param can switch the dependence on the batch
  on or off (a gate multiplying a batch mean), and a zero-initialized head hides a
  batch-statistics layer until training moves it. So its pass is keyed by the signature, a
  digest of the variables' values (`values_digest`, one pass over them on the devices) and the
  first batch: it is reused by the calls that score the same variables on the same data (the
  logit scores, GraNd and the features of one score epoch), and reruns when the values change.

The batch check's pass serves every score kind (it reads the logits only); GraNd's decisions
are GraNd's alone. A failed check raises ValueError and is never cached. A model form keyed by
identity (`model_form.base.hash_key`: an unhashable function model) stays alive while its
entries do, so its id is not reused; like the compiled programs, the cache assumes a model
object is not mutated between calls. At most `LIMIT` signatures of each kind are kept. `clear`
forgets everything (also `programs.clear_programs()`); `stats` counts the work done, for tests
and logs.

Usage:

    sig = decisions.signature(form, placed, images, "unroll", None)  # None: not cached
    entry = decisions.grand(sig)  # a GrandDecision or None
    decisions.record_grand(sig, decisions.GrandDecision("linen_sites", frozenset(), True))
    decisions.stats()  # {'batch_checks': 1, 'guards': 1, 'races': 0, ...}
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from datadiet_jax.scores import sharding

LIMIT = 64  # signatures kept per kind of decision; the oldest is forgotten first

# What `stats` counts: checks and traces run, races started, program runs timed, cache hits.
COUNTED = ("batch_checks", "site_finders", "guards", "races", "timed_runs", "hits")


@dataclasses.dataclass(frozen=True)
class GrandDecision:
    """GraNd's decisions for one signature.

    Attributes:
      sites: the site finder, 'linen_sites' or 'jaxpr_sites' (`pergrad.method.sites_method`).
      exclude: the guard's verdict: site keys left to the exact fallback.
      trusted: whether the verdict holds at other values (every passed site was judged); if
        not, the guard reruns in every call.
      method: the race's winner (`pergrad.method.METHODS`); None while no call has timed.
    """

    sites: str
    exclude: frozenset
    trusted: bool
    method: str | None = None


_batch_passes: collections.OrderedDict = collections.OrderedDict()
_grand: collections.OrderedDict = collections.OrderedDict()
_counts: collections.Counter = collections.Counter()
_setup_seconds = [0.0]


def signature(form, variables, images, seed_axis: str, mesh) -> tuple | None:
    """The key of a call's decisions, or None when something in it is unhashable.

    Args:
      form: the `model_form.ModelForm`; variables: the stacked `{'params', 'state'}` [K, ...];
      images: the first padded batch [B, ...] (its shape and dtype); seed_axis: the resolved
      mode; mesh: the call's mesh or None.
    """
    leaves, tree = jax.tree.flatten(variables)
    shapes = tuple((tuple(np.shape(v)), str(getattr(v, "dtype", type(v).__name__))) for v in leaves)
    example = (tuple(np.shape(images)), str(images.dtype))
    key = (form, tree, shapes, example, seed_axis, mesh, jax.default_backend())
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _mix(h):
    """murmur3's 32-bit finalizer: every input bit moves about half the output bits."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(x) -> jax.Array:
    """The bits of an array as uint32 words [n]."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        x = jnp.stack([x.real, x.imag])
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    size = x.dtype.itemsize
    if size < 4:
        x = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[size])
        return x.astype(jnp.uint32).ravel()
    return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()  # 8 bytes: [..., 2] words


@jax.jit
def _digest(leaves):
    sums = []
    for j, leaf in enumerate(leaves):
        words = _words(leaf)
        at = jnp.arange(words.size, dtype=jnp.uint32)
        for seed in (0x9E3779B9, 0x7F4A7C15):  # two independent 32-bit sums (mod 2^32)
            salt = _mix(at * jnp.uint32(seed) + jnp.uint32(j))
            sums.append(jnp.sum(_mix(words ^ salt), dtype=jnp.uint32))
    return jnp.stack(sums) if sums else jnp.zeros(0, jnp.uint32)


def values_digest(variables) -> bytes | None:
    """A digest of every bit of `variables` (a pytree of arrays), computed where they live.

    Each leaf gives two sums mod 2^32 of its words mixed with their positions, so any change of
    values changes the digest but with probability about 2^-64. None for leaves it cannot read.
    """
    try:
        return sharding.fetch(_digest(jax.tree.leaves(variables))).tobytes()
    except (TypeError, ValueError):
        return None


def batch_key(sig: tuple | None, variables, first_batch) -> tuple | None:
    """The key of a batch check's pass: `sig`, the variables' digest and the first batch
    `(images [B, ...], labels [B], mask [B], count)` (its images and count); None: not cached."""
    if sig is None:
        return None
    digest = values_digest(variables)
    if digest is None:
        return None
    images = hashlib.blake2b(np.asarray(first_batch[0]).tobytes()).digest()
    return (sig, digest, images, int(first_batch[3]))


def _remember(table: collections.OrderedDict, key, value) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > LIMIT:
        table.popitem(last=False)


def batch_passed(key: tuple | None) -> bool:
    """Whether a batch check with this `batch_key` passed before in this process."""
    hit = key is not None and key in _batch_passes
    _counts["hits"] += hit
    return hit


def record_batch_pass(key: tuple | None) -> None:
    """Remembers a passed batch check (a refused one raised and is not remembered)."""
    if key is not None:
        _remember(_batch_passes, key, True)


def grand(sig: tuple | None) -> GrandDecision | None:
    """GraNd's decisions for `sig` made earlier in this process, or None."""
    entry = None if sig is None else _grand.get(sig)
    _counts["hits"] += entry is not None
    return entry


def record_grand(sig: tuple | None, decision: GrandDecision) -> None:
    """Remembers GraNd's decisions for `sig` (nothing for an unhashable call)."""
    if sig is not None:
        _remember(_grand, sig, decision)


def count(name: str, n: int = 1) -> None:
    """Adds `n` to the counter `name` (one of `COUNTED`)."""
    _counts[name] += n


def add_setup_seconds(seconds: float) -> None:
    """Adds one call's fixed-cost seconds (checks, guard, the race's extra time)."""
    _setup_seconds[0] += float(seconds)


def stats() -> dict:
    """{counter: n for `COUNTED`} and 'setup_seconds', all since the last `clear`.

    Callers take differences around a call, e.g. the score stage's `setup_seconds`.
    """
    return {name: int(_counts[name]) for name in COUNTED} | {"setup_seconds": _setup_seconds[0]}


def clear() -> None:
    """Forgets every decision and resets the counters."""
    _batch_passes.clear()
    _grand.clear()
    _counts.clear()
    _setup_seconds[0] = 0.0
