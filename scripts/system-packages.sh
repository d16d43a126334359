#!/bin/sh
# The system packages (Debian/Ubuntu) that some tests use and pip cannot install:
#
#   gdal-bin    gdalwarp and gdalinfo: tests/test_stack.py compares the stack's warp with
#               gdalwarp's, tests/test_products.py reads the soil-order map with gdalinfo;
#   slurm-wlm   slurmctld, slurmd, sbatch, squeue, srun: tests/test_cluster.py runs the workflow
#   munge       through the SLURM profile on a real controller. The test starts its own
#               munged, slurmctld and slurmd in a temporary folder and stops them at its end;
#               it does not use the system services the packages set up.
#
# Run by `make test`. As root with apt-get (CI), it installs the missing packages; otherwise it
# says what is missing and changes nothing, and the tests that need a missing program are
# skipped, each naming the program and the package. Nothing is done when all are present.
set -u

missing=""
has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
need() {  # need <package> <reason> <program>...
    package=$1 reason=$2
    shift 2
    for program in "$@"; do
        if ! has "$program"; then
            missing="$missing $package"
            echo "system packages: $package is missing ($program not found): $reason"
            return
        fi
    done
}
need gdal-bin "gdalwarp and gdalinfo, to compare the stack and the maps with GDAL's tools" \
    gdalwarp gdalinfo
need slurm-wlm "slurmctld and slurmd, for the workflow test on a real SLURM controller" \
    slurmctld slurmd sbatch squeue srun scontrol sinfo
need munge "munged, the authentication daemon the SLURM test starts" munged

if [ -z "$missing" ]; then
    echo "system packages: gdal-bin, slurm-wlm and munge are installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! has apt-get; then
    echo "system packages: not installing$missing (that needs root and apt-get);" \
        "the tests that use them will be skipped"
    exit 0
fi
echo "system packages: installing$missing with apt-get"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
# shellcheck disable=SC2086  # $missing is a list of package names
if apt-get update -qq >"$log" 2>&1 &&
    apt-get install -y -qq --no-install-recommends $missing >>"$log" 2>&1; then
    echo "system packages: installed$missing"
else
    tail -n 5 "$log"
    echo "system packages: apt-get failed (above); the tests that use$missing will be skipped"
fi
rm -f "$log"
