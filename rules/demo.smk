rule demo_source:
    output:
        flac=f"{PATHS['demo_dir']}/{{name}}.flac",
    log:
        f"{LOGS}/demo_source/{{name}}.log",
    conda:
        "../envs/audio.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        demo=config["demo"],
    script:
        "../scripts/demo_source.py"
