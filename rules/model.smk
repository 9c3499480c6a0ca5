rule model:
    # A random-init preset (model.name: tiny / musicgen-small-random), written in audiocraft's
    # pretrained-directory layout so that it loads through the same path as the real model.
    output:
        directory(f"{PATHS['models_dir']}/{{preset}}"),
    log:
        f"{LOGS}/model/{{preset}}.log",
    benchmark:
        f"{BENCH}/model/{{preset}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=model_mem_mb(4000),
    params:
        seed=config["model"]["seed"],
    script:
        "../scripts/model.py"
