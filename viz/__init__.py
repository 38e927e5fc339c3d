"""Plots of stored runs (``rtnclock plot``): clock raster, level traces, cross-frequency
coupling, gates, cost and effective rank; each a ``plot_*(run) -> Figure``; a growing run's
tree over time (``plot_topology``); and a training run directory's gate-open rate per step
(``plot_training``)."""

from . import plots
from .plots import (KINDS, coupling_table, decimate, level_signals, plot_coupling, plot_cost,
                    plot_gates, plot_rank, plot_raster, plot_traces)
from .topology import plot_topology
from .training import plot_training

#: Plots that need a growing run's stored tree (``--kind all`` adds them when it has one).
GROWTH_KINDS = ("topology",)
PLOTS = {**plots.PLOTS, "topology": plot_topology}

__all__ = ["GROWTH_KINDS", "KINDS", "PLOTS", "coupling_table", "decimate", "level_signals", "plot_coupling", "plot_cost",
           "plot_gates", "plot_rank", "plot_raster", "plot_topology", "plot_traces",
           "plot_training"]
