#!/usr/bin/env bash
# bind-rank.sh BINARY ARGS...: runs one mpirun rank on its own GPU. The rank's local index on this
# machine (Open MPI's OMPI_COMM_WORLD_LOCAL_RANK) picks the GPU: CUDA_VISIBLE_DEVICES is that GPU
# only, and, where numactl and the GPU's NUMA node are known, the rank runs on that node's cores
# (host staging buffers and NCCL's proxy thread then sit next to the GPU's PCIe root). NCCL still
# finds the NVLink peers: it identifies GPUs by PCI bus id, not by CUDA index.
set -euo pipefail
local_rank="${OMPI_COMM_WORLD_LOCAL_RANK:?bind-rank.sh runs under mpirun (OMPI_COMM_WORLD_LOCAL_RANK unset)}"
IFS=',' read -r -a visible <<<"${CUDA_VISIBLE_DEVICES:-}"
gpu="${visible[$local_rank]:-$local_rank}"
export CUDA_VISIBLE_DEVICES="$gpu"
if command -v numactl >/dev/null 2>&1 && command -v nvidia-smi >/dev/null 2>&1; then
  bus=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader -i "$gpu" 2>/dev/null | tr 'A-F' 'a-f' || true)
  # nvidia-smi prints an 8-digit PCI domain (00000000:18:00.0); sysfs uses 4 (0000:18:00.0).
  bus="${bus#0000}"
  node=$(cat "/sys/bus/pci/devices/$bus/numa_node" 2>/dev/null || echo -1)
  if [ "${node:--1}" -ge 0 ]; then
    exec numactl --cpunodebind="$node" --preferred="$node" "$@"
  fi
fi
exec "$@"
