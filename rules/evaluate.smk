rule evaluate:
    # Does it sound like her? Speaker similarity to the held-out validation clips of the fine-tuned
    # model's samples, the base model's (same prompts and seeds) and real training clips (the ceiling).
    input:
        lm_checkpoint=lambda wildcards: checkpoint_path(wildcards.voice),
        model=model_input,
        status=lambda wildcards: status_path(wildcards.voice),
        manifest=lambda wildcards: manifest_path(wildcards.voice),
    output:
        evaluation=f"{PATHS['eval_dir']}/{{voice}}/voice_eval.json",
    log:
        f"{LOGS}/evaluate/{{voice}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{voice}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=model_mem_mb(8000),
        gpu=gpu_jobs("evaluate"),
    params:
        description=lambda wildcards: config["voices"][wildcards.voice]["description"],
        model=MODEL_NAME,
        model_ref=model_ref(),
        settings=config["evaluate"],
        sample=sample_settings_for_evaluate(),
        attention_backend=config["model"]["attention_backend"],
    script:
        "../scripts/evaluate.py"
