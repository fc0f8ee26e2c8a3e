"""The kopf operator: thin handlers that carry out the plans of ``credward.domain``."""
