"""The pretraining stage (installed as nnssl_plugin.pretrain): one method-agnostic nnUNetTrainer subclass,
`nnsslPretrainer` (`trainer`), whose method and run length come from the trainer name, and the registry that makes
every valid name `nnsslPretrainer_<method>[_<N>epochs][_<M>iters][_seed<K>][_r<hash>]` a class on first use
(`registry`; docs/ARCHITECTURE.md, "How trainers are found")."""
