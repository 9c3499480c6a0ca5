rule demo_source:
    output:
        flac=f"{PATHS['demo_dir']}/{{name}}.flac",
    params:
        demo=config["demo"],
    log:
        f"{LOGS}/demo_source/{{name}}.log",
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/audio.yaml"
    script:
        "../scripts/demo_source.py"
