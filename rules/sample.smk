rule sample:
    # Listen to the result: a text-conditioned clip and a continuation of a validation clip.
    input:
        export=lambda wildcards: export_dir(wildcards.voice),
        lm_checkpoint=lambda wildcards: checkpoint_path(wildcards.voice),
        manifest=lambda wildcards: manifest_path(wildcards.voice),
    output:
        text=f"{PATHS['samples_dir']}/{{voice}}/text.wav",
        continuation=f"{PATHS['samples_dir']}/{{voice}}/continuation.wav",
    log:
        f"{LOGS}/sample/{{voice}}.log",
    benchmark:
        f"{BENCH}/sample/{{voice}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        description=lambda wildcards: config["voices"][wildcards.voice]["description"],
        settings=config["sample"],
        attention_backend=config["model"]["attention_backend"],
    script:
        "../scripts/sample.py"
