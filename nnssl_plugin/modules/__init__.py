"""nn.Modules of the methods, no nnU-Net imports (a built U-Net is passed in): the contract every pretraining
network keeps (`network_protocol`), the pretraining networks (`moco_net` for moco / moco_zca, `hier_net` for hier /
voxel2vec), their parts (projection heads, the persistent key queue, the EMA helper, running and frozen ZCA
whitening, the U-Net feature pyramid), and the linear probe with the level sets it reads (`probe`, `probe_levels`),
shared by nnUNetTrainerSSLLinear and nnssl_probe."""
