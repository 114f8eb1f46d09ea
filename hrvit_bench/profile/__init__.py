"""`hrvit-bench profile`: where the time goes, beside where the FLOPs go, module by module or operator by operator.

Equal FLOPs are not equal time. This joins the meta engine's MACs per module (and per operator) with times
measured under the latency harness's rules: the same settings, warm-up, pinned threads, synchronised clocks,
inference mode and GC off.

**By module**, times come from forward hooks. Each hook writes a clock reading and nothing else: on CPU
``time.perf_counter_ns`` (or the thread's CPU clock, ``--cpu-time``), on CUDA a recorded CUDA event. The events are read once the forward has finished and the
device is synchronised, so no hook waits for the GPU. Only the modules that make up the rows are hooked: every
module to ``depth``, and below an uncalled container such as a ``ModuleList``, the first modules that are
called. A module's *own* time is its calls minus the hooked calls inside them. A row at ``depth`` sums the own
time of every hooked module in its subtree. A shallower module that has children gets a ``(self)`` row for its
own code, and ``(outside modules)`` is the forward less its root module. The rows therefore split the hooked
forward with no overlap. Three forwards run each round, in an order rotated every round: the plain one, the
rows-hooked one, and one with every called module hooked. The last gives the *small-ops view*: the share of
time in module code that does fewer than N MFLOPs per call. The **sum check** compares the rows' medians, added
up, with the plain forward's median from the same rounds, and prints how much of the gap is hook overhead.

**By operator**, torch.profiler times every aten operator called from Python (the outermost aten event; its
nested aten calls belong to it), on the CPU or, on CUDA, as its kernels' device time. Operator names join the
meta engine's (``aten::conv2d`` -> ``conv``, ``aten::linear`` -> ``linear``, ...); operators no counting rule
knows have no MACs, and the report names them. Profiled and plain forwards alternate, and the sum check covers
the profiler's overhead.

**Bytes moved** per module (the roofline's x axis) are counted on the meta engine with hooks: the parameters the
module reads, plus its input and output activations, each distinct tensor once per call, at the run's dtype.
It is a lower bound on the real traffic, the roofline's usual "compulsory traffic": re-reads, workspaces and
intermediate tensors inside the module are not counted.

One module per job: ``costs`` (the row plan, per-module MACs and bytes), ``passes`` (hooked and profiled forwards),
``joins`` (times joined to counts), ``results`` (what is reported, rendered) and ``driver``; the clocks and the
rounds loop are the latency harness's (``latency.timer``).
"""
from .costs import ModuleCosts, RowPlan
from .driver import DEFAULT_SMALL_MFLOPS, REPORT_MODELS, profile_for_report, profile_models
from .joins import OUTSIDE_MODULES, OUTSIDE_OPERATORS, module_rows, operator_rows, small_ops
from .passes import HookedPass, HookedSample, OpEvent, ProfiledPass, ProfiledSample
from .results import OperatorCalls, ProfileReport, ProfileRow, SmallOps, SumCheck

__all__ = ["DEFAULT_SMALL_MFLOPS", "OUTSIDE_MODULES", "OUTSIDE_OPERATORS", "REPORT_MODELS", "HookedPass",
           "HookedSample", "ModuleCosts", "OpEvent", "OperatorCalls", "ProfileReport", "ProfileRow", "ProfiledPass",
           "ProfiledSample", "RowPlan", "SmallOps", "SumCheck", "module_rows", "operator_rows", "profile_for_report",
           "profile_models", "small_ops"]
