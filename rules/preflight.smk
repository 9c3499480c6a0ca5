rule preflight:
    input:
        preflight_input,
    output:
        marker=f"{PATHS['preflight_dir']}/{{voice}}.json",
    params:
        source=lambda wildcards: source_path(wildcards.voice),
        source_state=source_state,
        settings=config["preflight"],
    log:
        f"{LOGS}/preflight/{{voice}}.log",
    benchmark:
        f"{BENCH}/preflight/{{voice}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/audio.yaml"
    script:
        "../scripts/preflight.py"
