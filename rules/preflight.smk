rule preflight:
    input:
        preflight_input,
    output:
        marker=f"{PATHS['preflight_dir']}/{{voice}}.json",
    log:
        f"{LOGS}/preflight/{{voice}}.log",
    benchmark:
        f"{BENCH}/preflight/{{voice}}.tsv"
    conda:
        "../envs/audio.yaml"
    threads: 2  # decoding runs ahead of the level analysis
    resources:
        mem_mb=1000,
    params:
        source=lambda wildcards: source_path(wildcards.voice),
        source_state=source_state,
        settings=config["preflight"],
    script:
        "../scripts/preflight.py"
