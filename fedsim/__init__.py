"""fedsim: a decentralized cross-silo federated learning simulator on torch.distributed."""

__version__ = "0.1.0"
