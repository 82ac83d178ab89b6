#!/bin/bash
#SBATCH -p debug -o /tmp/p20/k.out -e /tmp/p20/k.err
trap 'printf "end %s\n" "$SLURM_JOB_ID" >/dev/udp/127.0.0.1/47112; echo trap rc=$?' EXIT
echo hi
