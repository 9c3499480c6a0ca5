rule train:
    # Fine-tune the LM on the token cache; write train_status.json and the checkpoint (audiocraft's
    # LM format). Resume state lives in paths.state_dir (read from the config by the script: a
    # path, so not a param that would rerun training).
    input:
        tokens=lambda wildcards: tokens_path(wildcards.voice),
        model=model_input,
    output:
        status=f"{PATHS['train_dir']}/{{voice}}/train_status.json",
        lm_checkpoint=f"{PATHS['checkpoint_dir']}/{{voice}}/{CHECKPOINT_NAME}",
        loss_plot=report(
            f"{PATHS['train_dir']}/{{voice}}/loss_curve.png",
            caption="report/loss_curve.rst",
            category="Training",
            labels={"voice": "{voice}", "figure": "loss curve"},
        ),
    log:
        f"{LOGS}/train/{{voice}}.log",
    benchmark:
        f"{BENCH}/train/{{voice}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        mem_mb=model_mem_mb(16000),
        gpu=gpu_jobs("train"),
    params:
        model=MODEL_NAME,
        model_ref=model_ref(),
        settings=config["train"],
        attention_backend=config["model"]["attention_backend"],
    script:
        "../scripts/train.py"
