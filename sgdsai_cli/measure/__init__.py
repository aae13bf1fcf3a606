"""Measuring: every figure the tool reports is produced here, once, as a typed result.

    devices         device names, device records, free memory, out-of-memory detection
    storage         bytes behind tensors (each storage once) and optimizer state per key
    tracker         live-tensor tracking (exact allocations and frees, op by op)
    stats           percentiles, latency summaries, the timing-spread warning
    limits          upper bounds on step counts (MAX_STEPS), checked before any work
    stepping        stepping optimizers the core sizes or traces (CUDA path, symbolic scalars)
    sizing          exact sizing on meta -> ProfileResult (size_profile)
    estimate        the fake-tensor trace of one training step
    batch_line      forward + backward traces at any batch from a few (every allocation affine in the batch)
    model_bytes     a model's parameter, gradient, buffer and quant-state bytes (one meta build)
    realrun         real runs, one child process per optimizer -> RealRun (run_real)
    job, child      the parent-child protocol and the child process
    worker, training, phases, memory_summary   inside the child: the run, its phases, its summary
    compare         estimate against measurement
    sampler         the sampler thread and NVML
    bench, bench_result   the optimizer-step benchmark -> BenchResult (bench_step)

Nothing here prints, draws or changes global state; progress goes through callbacks.
"""
