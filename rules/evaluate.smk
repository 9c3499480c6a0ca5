rule evaluate:
    # Does it sound like her? On the test block only: continuations of test clips by the fine-tuned
    # and the base model (same prompts and seeds), her real audio after each prompt and that audio
    # through the model's codec; speaker similarity, DNSMOS quality and the copy check against the
    # training token cache; the pieces kept as WAVs with a page that plays them side by side.
    input:
        lm_checkpoint=lambda wildcards: checkpoint_path(wildcards.voice),
        model=model_input,
        status=lambda wildcards: status_path(wildcards.voice),
        manifest=lambda wildcards: manifest_path(wildcards.voice),
        tokens=lambda wildcards: tokens_path(wildcards.voice),
    output:
        evaluation=f"{PATHS['eval_dir']}/{{voice}}/voice_eval.json",
        listen=report(
            f"{PATHS['eval_dir']}/{{voice}}/listen.html",
            caption="report/eval_listen.rst",
            category="Does it sound like her?",
            labels={"voice": "{voice}", "page": "side by side"},
        ),
        wavs=directory(f"{PATHS['eval_dir']}/{{voice}}/pieces"),
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
