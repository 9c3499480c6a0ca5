rule encode:
    # Clips -> EnCodec codes with the model's own codec, once (int16 token cache).
    input:
        manifest=lambda wildcards: manifest_path(wildcards.voice),
        clips=lambda wildcards: f"{dataset_dir(wildcards.voice)}/clips",
        model=model_input,
    output:
        tokens=f"{PATHS['tokens_dir']}/{{voice}}.npz",
    log:
        f"{LOGS}/encode/{{voice}}.log",
    benchmark:
        f"{BENCH}/encode/{{voice}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=model_mem_mb(8000),
        gpu=gpu_jobs("encode"),
    params:
        model=MODEL_NAME,
        model_ref=model_ref(),
        settings=config["encode"],
        attention_backend=config["model"]["attention_backend"],
    script:
        "../scripts/encode.py"
