"""Parent groups of the clusters: an agglomerative tree (Ward linkage) over the centres, cut
into a few groups, with ids that keep their meaning across model versions.

The tree is over the k centres, not the users: a few microseconds per version, and a user's
parent is its cluster's, so scoring pays one lookup. A group keeps the id of the previous
version's group it shares the most clusters with (cluster ids are stable themselves), so
parent 1 stays parent 1 while the clusters under it stay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Hierarchy:
    """One version's tree: each cluster's parent, each parent's label and clusters, and the
    linkage matrix over `leaves` (cluster ids, in the rows of the centres) for a dendrogram."""

    parent_of: Mapping[int, int] = field(default_factory=dict)
    labels: Mapping[int, str] = field(default_factory=dict)
    leaves: tuple[int, ...] = ()
    linkage: Floats = field(default_factory=lambda: np.zeros((0, 4)))

    def parent(self, cluster: int) -> int:
        """The parent group of a cluster; -1 for none (no clusters, or a cluster gone)."""
        return self.parent_of.get(cluster, -1)

    def children(self, parent: int) -> list[int]:
        return sorted(c for c, p in self.parent_of.items() if p == parent)


class Parents:
    """The trainer's side: builds each version's tree and keeps parent ids stable."""

    def __init__(self, groups: int) -> None:
        self.groups = groups
        self.previous: dict[int, frozenset[int]] = {}  # parent id -> its clusters
        self.issued: set[int] = set()

    def build(
        self, ids: Sequence[int], centers: Floats, label: Callable[[Floats], str]
    ) -> Hierarchy:
        """The tree over these centres (rows named by their stable cluster ids); `label`
        names a parent from the mean of its clusters' centres."""
        if len(ids) < 2:
            return Hierarchy()
        tree = linkage(centers, method="ward")
        cut = fcluster(tree, t=min(self.groups, len(ids)), criterion="maxclust")
        groups: dict[int, list[int]] = {}
        for row, group in enumerate(cut.tolist()):
            groups.setdefault(group, []).append(row)
        stable = self._match({g: frozenset(ids[r] for r in rows) for g, rows in groups.items()})
        parent_of = {ids[r]: stable[g] for g, rows in groups.items() for r in rows}
        labels = {stable[g]: label(centers[rows].mean(axis=0)) for g, rows in groups.items()}
        self.previous = {stable[g]: frozenset(ids[r] for r in rows) for g, rows in groups.items()}
        return Hierarchy(parent_of, labels, tuple(int(i) for i in ids), tree)

    def _match(self, groups: dict[int, frozenset[int]]) -> dict[int, int]:
        """Each group's stable id: the previous group it shares the most clusters with (at
        least one), else one never given before."""
        own = list(groups)
        stable: dict[int, int] = {}
        if self.previous:
            old = list(self.previous)
            shared = np.array([[len(groups[g] & self.previous[p]) for p in old] for g in own])
            rows, cols = linear_sum_assignment(-shared)
            stable = {own[r]: old[c] for r, c in zip(rows, cols, strict=True) if shared[r, c]}
        self.issued.update(stable.values())
        fresh = (i for i in range(len(self.issued) + len(own) + 1) if i not in self.issued)
        for group in own:
            if group not in stable:
                stable[group] = next(fresh)
                self.issued.add(stable[group])
        return stable
