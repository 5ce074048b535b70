"""The small transformers of `bench_scores`: a ViT and a text classifier (Flax Linen).

vit:  32x32x3 images -> 4x4 patch conv (64 wide) -> class token (concatenated) and learned
      position embedding (added) -> 2 pre-norm blocks (LayerNorm, 4-head attention, LayerNorm,
      MLP 128) -> LayerNorm -> Dense on the class token.
text: 64 token ids (vocabulary 1000) -> Embed (64 wide) + learned position embedding -> the same
      2 blocks -> LayerNorm -> mean over positions -> Dense. The scores API takes float inputs,
      so the ids arrive as float32 and are cast to int32 by the model.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

DIM, HEADS, MLP, DEPTH = 64, 4, 128, 2
VOCAB, SEQ = 1000, 64


class Block(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS)(y, y)
        y = nn.Dense(MLP)(nn.LayerNorm()(x))
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
    """token ids [B, 64] (float32 holding integers) -> logits [B, num_classes]."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, DIM)(tokens.astype(jnp.int32))
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, SEQ, DIM))
        for _ in range(DEPTH):
            x = Block()(x)
        return nn.Dense(self.num_classes)(nn.LayerNorm()(x).mean(axis=1))


MODELS = {"vit": ViT, "text_classifier": TextClassifier}


def inputs(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic inputs of model `name`: images [n, 32, 32, 3] or token ids [n, 64], float32."""
    if name == "vit":
        return rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
    return rng.integers(0, VOCAB, (n, SEQ)).astype(np.float32)
