"""The networks of Eqs. 1, 7, 14 and Myrtle-5 with their priors, and their training data
(teachers, Gaussian inputs, image subsets)."""
