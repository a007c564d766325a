"""c2al-rec: Cohort-Contrastive Auxiliary Learning on TorchRec."""

__version__ = "0.1.0"
