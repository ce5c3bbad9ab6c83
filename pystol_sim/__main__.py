from pystol_sim.cli import main

main()
