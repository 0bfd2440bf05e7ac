# %% [markdown]
# # ResNet-18 results, dug further
#
# This notebook is executed by the pipeline (`make report`) against the current run: it
# reads the saved test predictions (`runs/cls/main/eval/predictions.npz`) and the metrics file,
# recomputes the headline number from the raw logits, and looks at calibration and top-2
# accuracy, which the main page does not show.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

root = Path(os.environ.get("PIPELINE_ROOT", "."))
metrics = json.loads((root / "site_assets/cls/metrics.json").read_text())
with np.load(root / "runs/cls/main/eval/predictions.npz") as data:
    logits, labels = data["logits"], data["labels"]
classes = metrics["classes"]
print(f"{len(labels)} test images, {logits.shape[1]} classes")

# %% [markdown]
# ## The headline number, recomputed from the logits

# %%
probabilities = np.exp(logits - logits.max(1, keepdims=True))
probabilities /= probabilities.sum(1, keepdims=True)
accuracy = (probabilities.argmax(1) == labels).mean()
top2 = (np.argsort(-probabilities, 1)[:, :2] == labels[:, None]).any(1).mean()
print(f"top-1 accuracy {100 * accuracy:.2f}% (metrics.json says {100 * metrics['test_accuracy']:.2f}%)")
print(f"top-2 accuracy {100 * top2:.2f}%")
assert abs(accuracy - metrics["test_accuracy"]) < 1e-9

# %% [markdown]
# ## Calibration: is a 90% prediction right 90% of the time?
#
# Predictions are binned by confidence; each bar is the accuracy within its bin. The
# expected calibration error (ECE) is the gap between confidence and accuracy, weighted by
# the share of predictions in each bin. Label smoothing tends to make a model less
# over-confident.

# %%
confidence = probabilities.max(1)
correct = probabilities.argmax(1) == labels
edges = np.linspace(0, 1, 11)
bins = np.clip(np.digitize(confidence, edges) - 1, 0, 9)
ece = 0.0
accuracy_per_bin, confidence_per_bin, share = [], [], []
for b in range(10):
    inside = bins == b
    if inside.any():
        accuracy_per_bin.append(correct[inside].mean())
        confidence_per_bin.append(confidence[inside].mean())
        share.append(inside.mean())
        ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    else:
        accuracy_per_bin.append(0.0)
        confidence_per_bin.append(0.0)
        share.append(0.0)
print(f"expected calibration error: {100 * ece:.2f} points")

fig, ax = plt.subplots(figsize=(5, 4), facecolor="white")
ax.bar(edges[:-1] + 0.05, accuracy_per_bin, width=0.09, label="accuracy in bin")
ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
ax.set_xlabel("confidence")
ax.set_ylabel("accuracy")
ax.set_title(f"Reliability diagram (ECE {100 * ece:.1f} points)")
ax.legend()
plt.show()

# %% [markdown]
# ## Which classes does the model hesitate between?
#
# For every class, the class that most often comes second in the model's ranking.

# %%
second = np.argsort(-probabilities, 1)[:, 1]
for c, name in enumerate(classes):
    runner_up = np.bincount(second[labels == c], minlength=len(classes))
    print(f"{name:>10}: runner-up most often {classes[runner_up.argmax()]}")
