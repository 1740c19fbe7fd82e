# Trivial workflow proving the CI cluster: two chained CPU jobs and one GPU-tagged job, each run
# through sbatch. Run by smoke.sh in a temporary folder.
import sys

PY = sys.executable  # the venv's python; sbatch --export=ALL passes PATH etc. to the jobs


rule all:
    input:
        "b.txt",
        "gpu.txt",


rule a:
    output:
        "a.txt",
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        "echo job=${{SLURM_JOB_ID:-none}} host=$(hostname) > {output}"


rule b:
    input:
        "a.txt",
    output:
        "b.txt",
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        "cat {input} > {output} && echo job=${{SLURM_JOB_ID:-none}} >> {output}"


rule gpu:
    output:
        "gpu.txt",
    resources:
        gpu=1,
        mem_mb=200,
        runtime=5,
    shell:
        "{PY} -c 'from lrdecay.core.gpu import device_slot\n"
        "with device_slot(\"cuda\") as v: print(v)' > {output}"
        " && echo job=${{SLURM_JOB_ID:-none}} cuda=${{CUDA_VISIBLE_DEVICES:-unset}} >> {output}"
