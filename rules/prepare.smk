rule prepare:
    input:
        source=preflight_input,
        marker=f"{PATHS['preflight_dir']}/{{voice}}.json",
        reference=speaker_reference,
    output:
        manifest=f"{PATHS['dataset_dir']}/{{voice}}/voice_dataset_manifest.json",
        index=f"{PATHS['dataset_dir']}/{{voice}}/data.jsonl",
        train_index=f"{PATHS['dataset_dir']}/{{voice}}/train/data.jsonl",
        valid_index=f"{PATHS['dataset_dir']}/{{voice}}/valid/data.jsonl",
        test_index=f"{PATHS['dataset_dir']}/{{voice}}/test/data.jsonl",
        clips=directory(f"{PATHS['dataset_dir']}/{{voice}}/clips"),
    log:
        f"{LOGS}/prepare/{{voice}}.log",
    benchmark:
        f"{BENCH}/prepare/{{voice}}.tsv"
    conda:
        PREPARE_ENV
    threads: 2  # decoding overlaps analysis; clips are written two at a time
    resources:
        mem_mb=2000,
    params:
        source=lambda wildcards: source_path(wildcards.voice),
        description=lambda wildcards: config["voices"][wildcards.voice]["description"],
        settings=config["prepare"],
        speakers=speaker_settings,
    script:
        "../scripts/prepare.py"
