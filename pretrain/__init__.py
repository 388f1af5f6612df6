"""The pretraining stage: nnUNetTrainer subclasses, one per method family (installed as nnssl_plugin.pretrain)."""
