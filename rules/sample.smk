rule sample:
    # Listen to the result: a text-conditioned clip and a continuation of a validation clip.
    input:
        lm_checkpoint=lambda wildcards: checkpoint_path(wildcards.voice),
        model=model_input,
        status=lambda wildcards: status_path(wildcards.voice),
        manifest=lambda wildcards: manifest_path(wildcards.voice),
    output:
        text=report(
            f"{PATHS['samples_dir']}/{{voice}}/text.wav",
            caption="report/sample_text.rst",
            category="Samples",
            labels={"voice": "{voice}", "sample": "text-conditioned (WAV)"},
        ),
        continuation=report(
            f"{PATHS['samples_dir']}/{{voice}}/continuation.wav",
            caption="report/sample_continuation.rst",
            category="Samples",
            labels={"voice": "{voice}", "sample": "continuation (WAV)"},
        ),
        listen=report(
            f"{PATHS['samples_dir']}/{{voice}}/listen.html",
            caption="report/listen.rst",
            category="Samples",
            labels={"voice": "{voice}", "sample": "listen (player)"},
        ),
    log:
        f"{LOGS}/sample/{{voice}}.log",
    benchmark:
        f"{BENCH}/sample/{{voice}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=model_mem_mb(8000),
        gpu=gpu_jobs("sample"),
    params:
        description=lambda wildcards: config["voices"][wildcards.voice]["description"],
        model_ref=model_ref(),
        settings=config["sample"],
        attention_backend=config["model"]["attention_backend"],
    script:
        "../scripts/sample.py"
