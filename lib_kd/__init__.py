"""Knowledge distillation (kd.py): a frozen teacher checkpoint guides a small student.

lib_kd.model_kd: teacher loading, pairing check and freezing; student arguments; train-script commands.
lib_kd.training_kd: the distillation loss, the engine objective, `distill(constants)` and the comparison table.
"""
