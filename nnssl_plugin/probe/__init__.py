"""The fast dense probe (`nnssl_probe`, DESIGN §7): frozen features → class-balanced voxels → multinomial logistic
regression → Dice per organ by dense sliding-window prediction."""
