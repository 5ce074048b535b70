"""Fashion-MNIST with the small CNN, sized for a 2-core CPU: the default `make run` job.

  python -m datadiet_jax.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist

The paper's protocol at CPU scale: K=4 score seeds trained for 1 epoch on the first 20,000
training images; EL2N and GraNd at epoch 1 (GraNd also at initialization); forgetting over that
epoch; then the 50% highest-EL2N examples, a random 50% and the full set are each retrained from a
fresh init for the same number of steps (3 epochs of full data) and tested on the 10,000 test
images. `:smoke` shrinks it to seconds.
"""

from datadiet_jax.pipeline.config_base import base_config, smoke


def get_config(arg: str | None = None):
    c = base_config()
    c.data.name = "fashion_mnist"
    c.data.num_train_examples = 20_000
    c.model.name = "small_cnn"
    c.train.num_epochs = 3
    c.train.checkpoint_every_epochs = 1
    c.score.num_seeds = 4
    c.score.el2n_epochs = (1,)
    c.score.grand_epochs = (0, 1)
    c.score.batch_size = 500
    c.prune.scores = ("el2n@1",)
    c.prune.fractions = (0.5,)
    c.retrain.num_seeds = 1
    return smoke(c) if arg == "smoke" else c
