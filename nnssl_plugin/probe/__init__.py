"""The fast dense probe (`nnssl_probe`; docs/ARCHITECTURE.md, "Evaluation and demo data"): frozen features →
class-balanced voxels → multinomial logistic regression → Dice per organ by dense sliding-window prediction; and the
online probe that runs it during pretraining (`online`)."""
