"""Stages that make synthetic faces or rows: the quality gate (``gate-train``), diffusers and demo-renderer
generation (``generate-artificial``, ``generate-augmented``, ``balanced-set``), the DDPM and SMOTE."""
