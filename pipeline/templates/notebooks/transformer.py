# %% [markdown]
# # Transformer results, dug further
#
# This notebook is executed by the pipeline (`make report`) against the current run: it
# reads the decoded test sentences (`runs/mt/main/eval/decodes.json`), recomputes corpus BLEU
# from them with sacrebleu, and looks at where beam search and greedy decoding disagree
# and how output length compares with the references.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sacrebleu.metrics import BLEU

root = Path(os.environ.get("PIPELINE_ROOT", "."))
metrics = json.loads((root / "site_assets/mt/metrics.json").read_text())
decodes = json.loads((root / "runs/mt/main/eval/decodes.json").read_text())
print(f"{len(decodes)} test sentences, {sum(len(d['references']) for d in decodes)} references")

# %% [markdown]
# ## Corpus BLEU, recomputed from the saved decodes

# %%
depth = max(len(d["references"]) for d in decodes)
streams = [[d["references"][i] if i < len(d["references"]) else None for d in decodes] for i in range(depth)]
bleu = BLEU().corpus_score([d["beam"] for d in decodes], streams)
print(bleu)
print(f"metrics.json says {metrics['test_bleu']:.2f}")
assert abs(bleu.score - metrics["test_bleu"]) < 1e-6

# %% [markdown]
# ## Sentence BLEU: how the scores are spread

# %%
scores = np.array([d["bleu"] for d in decodes])
fig, ax = plt.subplots(figsize=(6, 3.5), facecolor="white")
ax.hist(scores, bins=20, range=(0, 100), color="C0")
ax.set_xlabel("sentence BLEU (beam)")
ax.set_ylabel("test sentences")
ax.set_title("Distribution of sentence BLEU")
plt.show()
print(f"median sentence BLEU {np.median(scores):.1f}; {np.mean(np.isclose(scores, 100)):.1%} score 100")

# %% [markdown]
# ## Where beam search changes the output

# %%
changed = [d for d in decodes if d["greedy"] != d["beam"]]
print(f"beam search changes {len(changed)} of {len(decodes)} outputs")
for d in changed[:10]:
    print(f"- {d['source']}\n    greedy: {d['greedy']}\n    beam:   {d['beam']}\n"
          f"    refs:   {' | '.join(d['references'])}")

# %% [markdown]
# ## Output length against the closest reference

# %%
ratios = [len(d["beam"].split()) / min(len(r.split()) for r in d["references"]) for d in decodes]
print(f"mean length ratio (output / shortest reference): {np.mean(ratios):.3f}")
