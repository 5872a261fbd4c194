"""Device readiness: the GPU check script's checks, benchmarks and report (docs/scaling.md, "GPU")."""
