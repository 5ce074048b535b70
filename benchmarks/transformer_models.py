"""The small transformers of the benchmarks: a ViT and two text classifiers (Flax Linen).

vit:  32x32x3 images -> 4x4 patch conv (64 wide) -> class token (concatenated) and learned
      position embedding (added) -> 2 pre-norm blocks (LayerNorm, 4-head attention, LayerNorm,
      MLP 128) -> LayerNorm -> Dense on the class token.
text: 64 token ids (vocabulary 1000) -> Embed (64 wide) + learned position embedding -> the same
      2 blocks -> LayerNorm -> mean over positions -> Dense. The scores API takes float inputs,
      so the ids arrive as float32 and are cast to int32 by the model.
wide_text: the text classifier 256 wide with MLP 1024 over 16 positions (width well above the
      sequence length, as in BERT-style models, where the Gram identity pays).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

DIM, HEADS, MLP, DEPTH = 64, 4, 128, 2
VOCAB, SEQ = 1000, 64
WIDE_DIM, WIDE_MLP, WIDE_SEQ = 256, 1024, 16


class Block(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    mlp: int = MLP

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS)(y, y)
        y = nn.Dense(self.mlp)(nn.LayerNorm()(x))
        return x + nn.Dense(x.shape[-1])(nn.gelu(y))


class ViT(nn.Module):
    """images [B, 32, 32, 3] -> logits [B, num_classes]."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(DIM, (4, 4), strides=(4, 4), padding="VALID")(x)
        x = x.reshape(x.shape[0], -1, DIM)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, DIM))
        x = jnp.concatenate([jnp.tile(cls, (x.shape[0], 1, 1)), x], axis=1)
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], DIM))
        for _ in range(DEPTH):
            x = Block()(x)
        return nn.Dense(self.num_classes)(nn.LayerNorm()(x)[:, 0])


class TextClassifier(nn.Module):
    """token ids [B, seq] (float32 holding integers) -> logits [B, num_classes]."""

    num_classes: int = 10
    dim: int = DIM
    mlp: int = MLP
    seq: int = SEQ

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, self.dim)(tokens.astype(jnp.int32))
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, self.seq, self.dim))
        for _ in range(DEPTH):
            x = Block(mlp=self.mlp)(x)
        return nn.Dense(self.num_classes)(nn.LayerNorm()(x).mean(axis=1))


MODELS = {
    "vit": ViT,
    "text_classifier": TextClassifier,
    "wide_text": functools.partial(TextClassifier, dim=WIDE_DIM, mlp=WIDE_MLP, seq=WIDE_SEQ),
}


def inputs(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic inputs of model `name`: images [n, 32, 32, 3] or token ids [n, T], float32."""
    if name == "vit":
        return rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
    return rng.integers(0, VOCAB, (n, WIDE_SEQ if name == "wide_text" else SEQ)).astype(np.float32)
