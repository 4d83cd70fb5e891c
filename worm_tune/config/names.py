"""The names a config field may take that other layers also read: datasets, architectures, methods, modes.

Kept apart from the schema so that a layer needing a name (the data loaders, the models, the ticket
search) imports the name, not the config tree.
"""

from __future__ import annotations

IMAGE_DATASETS = ("cifar10", "cifar100", "digits")
#: GLUE tasks (Hugging Face ``datasets``) and ``text``: a local folder of train.tsv/test.tsv.
TEXT_DATASETS = ("sst2", "mrpc", "rte", "text")
DATASETS = IMAGE_DATASETS + TEXT_DATASETS
CNNS = ("resnet18", "vgg11_bn", "vgg16_bn")
#: ``vit``: torchvision's VisionTransformer for 32x32 images; ``bert``: Hugging Face BERT (``[nlp]`` extra).
TRANSFORMERS = ("vit", "bert")
ARCHS = CNNS + TRANSFORMERS
STEMS = ("imagenet", "cifar")
METHODS = ("earlybird", "worm", "gradclip", "greedy", "dense")
SCOPES = ("bn", "channel")
PRUNE_KINDS = ("unstructured", "structured")
RETRAIN_INITS = ("searched", "reinit")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
LOADERS = ("auto", "plain", "device")
PRECISIONS = ("auto", "fp32", "bf16")
SWITCHES = ("auto", "on", "off")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
#: ``grad``: scale masked gradients by r (the paper); ``update``: scale masked units' parameter change by r.
APPLY_MODES = ("grad", "update")
#: ``algorithm``: docs/method.md's Early-Bird rules; ``reference``: the reference code's (docs/method.md,
#: "Where the reference code differs from this page").
SEARCH_RULES = ("algorithm", "reference")
