"""The metrics an experiment may name, per model, and how each is read: which way is better, and the floor below
which a run is at chance. Both the definitions and the comparison stage read them."""

FINAL_METRICS = {"cls": ("test_accuracy", "test_loss"),
                 "mt": ("test_bleu", "test_chrf", "test_ter", "test_greedy_bleu", "test_bleu_lowercase",
                        "test_bleu_alone")}
EPOCH_METRICS = {"cls": ("val_accuracy", "val_loss", "train_loss", "train_accuracy"),
                 "mt": ("val_bleu", "val_loss", "train_loss")}
ITEM_METRICS = {"test_accuracy", "test_bleu"}  # scored per test item: a paired test on the items applies
# Declared before any sweep ran: a run "diverged" when a training loss is not finite or its last epoch's
# training loss is above its first epoch's; it is "at chance" when its last validation score is at or below
# this (one class in ten is 10 % accuracy; a BLEU of 1 is no translation).
CHANCE = {"val_accuracy": 0.15, "val_bleu": 1.0}
HIGHER_IS_BETTER = {"test_accuracy": True, "val_accuracy": True, "train_accuracy": True, "test_bleu": True,
                    "val_bleu": True, "test_chrf": True, "test_greedy_bleu": True, "test_bleu_lowercase": True,
                    "test_bleu_alone": True,
                    "test_ter": False, "test_loss": False, "val_loss": False, "train_loss": False}
